"""Deterministic simulation of tidegate: one event loop, one seed, faults at every protocol step."""
