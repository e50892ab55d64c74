"""Deterministic simulation of Raft groups: one seed, one reproducible run."""
