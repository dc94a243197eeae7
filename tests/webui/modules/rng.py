"""Stand-in for the WebUI's modules/rng.py: seeded noise, one generator per image (ImageRNG), so that an
image of a batch gets the same noise as the same seed alone.

Simplified: only the "CPU" and "GPU" sources, both drawn on the CPU (the stand-in runs there; the real
"CPU" source does the same); the "NV" (Philox, as NVIDIA's) source raises NotImplementedError."""

from __future__ import annotations

import torch

from modules import devices, shared


def _cpu_generator(seed: int) -> torch.Generator:
    if shared.opts.randn_source == "NV":
        raise NotImplementedError("stand-in: randn_source 'NV' (philox) is not implemented")
    return torch.Generator(devices.cpu).manual_seed(int(seed))


def create_generator(seed: int) -> torch.Generator:
    """rng.create_generator: a private generator started at ``seed``."""
    return _cpu_generator(seed)


def randn_local(seed: int, shape) -> torch.Tensor:
    """rng.randn_local: noise from a private generator, leaving torch's global one alone (what the
    torchsde Brownian-interval patch of sd_samplers_common draws from)."""
    return torch.randn(shape, generator=_cpu_generator(seed), device=devices.cpu).to(devices.device)


def slerp(val, low, high):
    """rng.slerp: spherical interpolation from ``low`` (val 0) to ``high`` (val 1), the angle taken along
    dim 1. When the two are nearly parallel the real function falls back to ``low * val + high * (1 - val)``
    (the weights the other way round); kept as it is, since variation seeds depend on it."""

    def direction(v):
        return v / torch.norm(v, dim=1, keepdim=True)

    cosine = (direction(low) * direction(high)).sum(1)
    if cosine.mean() > 0.9995:
        return low * val + high * (1 - val)
    angle = torch.acos(cosine)
    weights = [torch.sin(share * angle) / torch.sin(angle) for share in (1.0 - val, val)]
    return sum(weight.unsqueeze(1) * end for weight, end in zip(weights, (low, high)))


def _centred(canvas_size: int, patch_size: int) -> tuple[int, int, int]:
    """Where a patch goes when centred on a canvas along one axis: (canvas offset, patch offset, length).
    A larger patch is cropped by floor((patch - canvas) / 2) at both ends, which can leave the last row
    or column of the canvas uncovered when the difference is odd, as in the real code."""
    shift = (canvas_size - patch_size) // 2
    if shift >= 0:
        return shift, 0, patch_size
    return 0, -shift, patch_size + 2 * shift


class ImageRNG:
    """rng.ImageRNG: the noise of one batch. ``first()`` gives the initial latent noise, per image: the
    seed's noise (a variation seed slerped in with ``subseed_strength``), and with "resize seed from"
    the noise of the smaller (or larger) size pasted into the centre of noise of the real size.
    ``next()`` continues drawing from the same per-image generators, which the samplers do through
    TorchHijack; with an eta noise seed delta (ENSD) those generators restart at seed + ENSD after
    ``first()``. Like the real one it leaves torch's global generator seeded with the last seed."""

    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds, self.subseeds, self.subseed_strength = seeds, subseeds, subseed_strength
        self.seed_resize_from_h, self.seed_resize_from_w = seed_resize_from_h, seed_resize_from_w
        self.generators = [create_generator(seed) for seed in seeds]
        self.is_first = True

    def _source_shape(self) -> tuple:
        if self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0:
            return self.shape[0], int(self.seed_resize_from_h) // 8, int(self.seed_resize_from_w) // 8
        return self.shape

    def _image_noise(self, index: int, seed: int, generator: torch.Generator) -> torch.Tensor:
        source_shape = self._source_shape()
        resized = source_shape != self.shape
        # at the source size the real code draws from torch's global generator seeded with the seed,
        # which gives the same numbers as a fresh generator
        noise = torch.randn(source_shape, generator=_cpu_generator(seed) if resized else generator)
        if self.subseeds is not None and self.subseed_strength != 0:
            subseed = self.subseeds[index] if index < len(self.subseeds) else 0
            variation = torch.randn(source_shape, generator=_cpu_generator(subseed))
            noise = slerp(self.subseed_strength, noise, variation)
        if resized:
            canvas = torch.randn(self.shape, generator=generator)
            (top, from_top, rows), (left, from_left, cols) = map(_centred, self.shape[1:], source_shape[1:])
            canvas[:, top : top + rows, left : left + cols] = noise[:, from_top : from_top + rows, from_left : from_left + cols]
            noise = canvas
        torch.manual_seed(seed)
        return noise

    def first(self) -> torch.Tensor:
        noise = [self._image_noise(i, seed, generator) for i, (seed, generator) in enumerate(zip(self.seeds, self.generators))]
        delta = shared.opts.eta_noise_seed_delta or 0
        if delta:
            self.generators = [create_generator(seed + delta) for seed in self.seeds]
        return torch.stack(noise).to(shared.device)

    def next(self) -> torch.Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([torch.randn(self.shape, generator=g, device=devices.cpu) for g in self.generators]).to(shared.device)
