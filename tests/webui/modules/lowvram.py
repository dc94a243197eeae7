"""Mirrors modules/lowvram.py as far as processing reads it: the stand-in never runs in lowvram mode."""


def is_enabled(sd_model):
    return False


def send_everything_to_cpu():
    pass
