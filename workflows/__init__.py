"""Deterministic workflow code only: the journey interpreter and its step handlers."""
