"""Workloads: built-in shapes, trace loading and open-loop replay."""
