"""The only code that talks to outside things: NVML, torch, subprocesses."""
