"""Policies (pure), the controller, the front door, cloud backends, the simulator and the CLI."""
