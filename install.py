"""Install what MasaCtrl needs beyond the WebUI. The WebUI already ships torch, gradio and numpy,
so this only checks, through the WebUI's launch helpers (which honour --skip-install), and installs
a missing package instead of failing at import."""

import launch

if not launch.is_installed("numpy"):
    launch.run_pip("install numpy", "numpy for sd-webui-masactrl")
