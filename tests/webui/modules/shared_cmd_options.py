"""Mirrors modules/shared_cmd_options.py: ``cmd_opts``, the parsed command line.

Simplified: a plain Namespace with the flags the stand-in reads, at the real defaults (no argparse
parser is run). Tests may set attributes on it; the harness restores them on teardown."""

import argparse

parser = argparse.ArgumentParser(add_help=False)


def _defaults():
    return dict(
        api=True,
        api_auth=None,
        api_log=False,
        api_server_stop=False,
        nowebui=False,
        no_prompt_history=False,
        embeddings_dir="",
        hide_ui_dir_config=False,
        freeze_settings=False,
        freeze_settings_in_sections=None,
        freeze_specific_settings=None,
        disable_all_extensions=False,
        disable_extra_extensions=False,
        use_textbox_seed=False,
        enable_console_prompts=False,
        xformers=False,
        force_enable_xformers=False,
        opt_sdp_attention=False,
        opt_sdp_no_mem_attention=False,
        disable_opt_split_attention=False,
        lowvram=False,
        medvram=False,
        no_half=True,
        no_half_vae=True,
        skip_load_model_at_start=False,
        ui_debug_mode=False,
    )


cmd_opts = argparse.Namespace(**_defaults())
