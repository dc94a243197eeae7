"""The real-host tier: MasaCtrl's user scenarios against a running WebUI (see conftest.py)."""
