"""Stand-in for Forge's ``backend/nn/`` package: only ``unet.py`` is mirrored."""
