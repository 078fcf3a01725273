"""Simulation mechanisms: they drive the same pure policies as the live system, on a virtual clock."""
