"""The WebUI adapter: the one part of the extension that imports the AUTOMATIC1111 WebUI's
``modules``. It reads the WebUI's state (``p``, ``shared``, the sampler, the loaded model) and turns
it into calls of the host-independent engine in the rest of ``lib_masactrl``; the engine never sees
a WebUI object.

Only ``scripts/masactrl.py`` imports it, and importing it registers nothing: the script's
bootstrap lines register the callbacks, so that *Reload UI*, which runs the script file again but
keeps these modules, registers them exactly once. Every submodule is imported when the script
loads, while the WebUI has the extension's folder on ``sys.path`` (modules/scripts.py,
``load_scripts``); an import inside a function could fail later.

Modules, one job each:

- :mod:`.ui`: the accordion, its visibility rules and its updates;
- :mod:`.generation`: one generation's life, from ``process`` to ``postprocess`` and ``p.close``;
- :mod:`.denoiser`: the CFG denoiser callback: each call's noise level and row layout;
- :mod:`.sampling`: the noise levels a pass samples, and whether its sampler adds noise;
- :mod:`.inversion`: inverting the img2img init image along the sampler's schedule;
- :mod:`.masks`: masks from prompts' subject words and from mask images, and their previews;
- :mod:`.controlnet`: finding the ControlNet extension and its units without importing it, and
  the control maps a sequence gives one unit;
- :mod:`.animation`: a one-source sequence's targets as an animated file;
- :mod:`.xyz`: the X/Y/Z plot axes and cells;
- :mod:`.infotext`: infotext keys and paste-back;
- :mod:`.options`: the *Settings > MasaCtrl* section;
- :mod:`.messages`: telling the user, and stopping a generation that cannot run;
- :mod:`.model`: the loaded model's U-Net and text encoder.
"""
