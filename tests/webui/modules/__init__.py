"""Test-only stand-in for the ``modules`` package of the AUTOMATIC1111 Stable Diffusion WebUI v1.10.1.

Only what an extension meets (scripts and callbacks, processing and the samplers around the CFG
denoiser, the prompt parser, settings, the UI's inputs and the API) is there, each module written from
the behaviour of the real file its docstring names. tests/webui/README.md lists what is simplified."""
