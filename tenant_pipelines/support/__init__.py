"""Small helpers every layer may use, and `resources/` too: one of each, written once."""
