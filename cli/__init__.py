"""The `sluice` command-line interface."""
