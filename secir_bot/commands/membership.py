"""Placeholder."""

COMMANDS = ()
