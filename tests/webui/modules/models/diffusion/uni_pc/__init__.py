"""Stand-in for the WebUI's modules/models/diffusion/uni_pc/__init__.py. The real package also exports
the legacy UniPCSampler (sampler.py), which the WebUI's sampler list does not use; it is left out."""
