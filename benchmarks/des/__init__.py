"""Discrete-event simulation of the routing decision (imports the real routing code)."""
