"""Stand-in for the WebUI's modules/sd_vae.py as far as processing and the X/Y/Z plot reach it: the
stand-in checkpoints carry their fixed VAE and no external VAE file is ever listed or loaded."""

vae_dict: dict = {}
"""VAE files by name: none."""


def get_loaded_vae_name():
    """Mirrors sd_vae.get_loaded_vae_name: None, the checkpoint's own VAE is in use."""
    return None


def get_loaded_vae_hash():
    """Mirrors sd_vae.get_loaded_vae_hash: None, as for the checkpoint's own VAE."""
    return None


def reload_vae_weights(sd_model=None, vae_file=None):
    """Mirrors sd_vae.reload_vae_weights: nothing to load; the model is returned as it is."""
    return sd_model
