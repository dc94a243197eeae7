"""Stand-in for Forge's ``backend/patcher/`` package: ``base.py`` and ``unet.py``."""
