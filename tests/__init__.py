"""Sluice tests."""
