"""Stand-in for Forge's ``backend/modules/`` package: only ``k_model.py`` is mirrored."""
