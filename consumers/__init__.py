"""Sluice client library: Producer, Consumer and Admin."""
