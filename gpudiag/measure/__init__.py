"""Measurement helpers shared by the probes: statistics, worker pools and thread timing, sizes."""
