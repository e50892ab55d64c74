"""Shared pytest configuration (trio_mode and markers live in pyproject.toml)."""
