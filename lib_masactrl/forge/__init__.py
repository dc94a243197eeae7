"""WebUI Forge's backend adapter: the one part of the extension that imports Forge's ``backend``.

Forge runs the WebUI's own ``modules`` (processing, scripts, infotext, the API), so
:mod:`lib_masactrl.webui` drives a Forge generation as it drives an A1111 one; Forge's U-Net,
sampling and ControlNet are its own, and for every sampling pass the WebUI adapter hands over to
this package:

- :mod:`.unet`: MasaCtrl on a clone of the pass's U-Net patcher (replace patches and a model
  function wrapper), never on the shared modules;
- :mod:`.sampling`: the pass hookup, the levels Forge's U-Net calls see, and what MasaCtrl refuses
  in Forge for now;
- :mod:`.model`: Forge's U-Net and text encoder, and telling a Stable Diffusion U-Net from Flux,
  SD3 and other models.

It imports nothing of ``modules``; in A1111 it is loaded and never used.
"""
