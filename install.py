"""Install what MasaCtrl needs beyond the WebUI. The WebUI already ships torch, gradio, einops
and numpy, so this only checks, through the WebUI's launch helpers (which honour
--skip-install), and installs a missing package instead of failing at import."""

import launch

for package in ("einops", "numpy"):
    if not launch.is_installed(package):
        launch.run_pip(f"install {package}", f"{package} for sd-webui-masactrl")
