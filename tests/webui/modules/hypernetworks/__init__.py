"""Stand-in for the WebUI's modules/hypernetworks package: only its hypernetwork.py, the inference part."""
