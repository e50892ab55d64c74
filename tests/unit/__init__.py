"""Unit tests of pure code."""
