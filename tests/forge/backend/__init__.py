"""Test stand-in for WebUI Forge's ``backend`` package (Forge commit dfdcbab6, ``backend/``).

Only the pieces the MasaCtrl Forge adapter touches are here, written from Forge's observable
behaviour, not from its code: attention (``attention.py``), the U-Net's transformer layers and block
bookkeeping (``nn/unet.py``), the eps-predicting model wrapper (``modules/k_model.py``), the model
patchers (``patcher/base.py``, ``patcher/unet.py``) and the cond/uncond batching of one denoiser call
(``sampling/sampling_function.py``). See ``tests/forge/README.md``.
"""
