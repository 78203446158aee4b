"""Sensors: tenant request intake, compensation backstop, resume of interrupted runs."""
