"""The CUDA probes `launch`, `contention` and `pcie`, their shared device plumbing (device.py) and
their pure analysis (analysis.py: PCIe theory and efficiency, launch and contention estimates)."""
