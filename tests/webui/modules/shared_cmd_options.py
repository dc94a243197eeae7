"""Stand-in for modules/shared_cmd_options.py: ``cmd_opts``, the WebUI's parsed command line.

No command line is parsed: ``cmd_opts`` is a namespace holding, at the real defaults, the flags some
code reads. Tests may change them; the harness puts them back at teardown."""

import argparse

cmd_opts = argparse.Namespace(no_prompt_history=False, use_textbox_seed=False, hide_ui_dir_config=False)
"""--no-prompt-history (processing skips params.txt), --use-textbox-seed (the seed is a textbox) and
--hide-ui-dir-config (folders on the server stay out of the UI's reach; extensions read it too)."""
