"""Sensors: tenant request intake, and the compensation backstop."""
