"""Stand-in for WebUI Forge's ``modules_forge`` package: only its presence, which is how extensions
(MasaCtrl's ``lib_masactrl/webui/compat.py``) tell Forge from the AUTOMATIC1111 WebUI. On
``sys.path`` only while a host runs as Forge (``forge_flavour.install``)."""
