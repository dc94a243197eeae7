"""Mirrors modules/sd_vae.py as far as processing reads it. Simplified: no external VAE is ever loaded."""

vae_dict = {}  # no VAE files


def get_loaded_vae_name():
    return None


def get_loaded_vae_hash():
    return None


def reload_vae_weights(sd_model=None, vae_file=None):
    return sd_model


def refresh_vae_list():
    pass
