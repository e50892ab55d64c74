"""The Trio shell: sockets, storage, clocks and telemetry around the pure core."""
