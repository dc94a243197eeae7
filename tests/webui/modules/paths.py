"""Stand-in for modules/paths.py: where the WebUI is installed.

The stand-in's root is tests/webui. It holds this ``modules`` package and a ``scripts`` folder with the
WebUI's built-in X/Y/Z plot script, and no model folders."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
