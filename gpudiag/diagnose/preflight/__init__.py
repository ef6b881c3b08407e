"""Preflight: go / no-go checks before a long run, in a fraction of a second, without torch."""
