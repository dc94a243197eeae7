"""Test-only stand-in for the ``modules`` package of AUTOMATIC1111 stable-diffusion-webui v1.10.1.

Only the parts an extension touches (scripts, callbacks, processing, CFG denoiser, the k-diffusion,
timestep and LCM samplers, prompt parser, options, API) are reproduced, each written from the
behaviour of the real file named in its comments. See ``tests/webui/README.md`` for the list of
simplifications.
"""
