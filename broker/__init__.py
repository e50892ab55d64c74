"""Sluice broker: the server (wire, core, runtime, config, app)."""
