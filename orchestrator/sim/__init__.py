"""Simulation on a virtual clock: exact discrete-event models that the analytic policies are checked against."""
