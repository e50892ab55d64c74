"""Structured fuzzing of a live broker process over real TCP (`python -m tests.fuzz.live`)."""
