"""Stand-in for Forge's ``backend/sampling/`` package: only ``sampling_function.py``."""
