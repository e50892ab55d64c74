"""Benchmarks (run by `make bench`; never timed assertions)."""
