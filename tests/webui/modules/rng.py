"""Mirrors modules/rng.py: seeded noise per image (ImageRNG) and the randn helpers.

Simplified: the "NV" (philox) source is not available and raises; "GPU" and "CPU" both draw from
CPU torch generators (the stand-in device is the CPU, where the real host does the same)."""

import torch

from modules import devices, shared


def _check_source():
    if shared.opts.randn_source == "NV":
        raise NotImplementedError("stand-in: randn_source 'NV' (philox) is not implemented")


def randn(seed, shape, generator=None):
    # mirrors rng.randn: seeds the global generator, then draws (from ``generator`` if given)
    _check_source()
    manual_seed(seed)
    return torch.randn(shape, device=devices.cpu, generator=generator).to(devices.device)


def randn_local(seed, shape):
    # mirrors rng.randn_local: a private generator, the global one is untouched
    _check_source()
    generator = torch.Generator(devices.cpu).manual_seed(int(seed))
    return torch.randn(shape, device=devices.cpu, generator=generator).to(devices.device)


def randn_like(x):
    _check_source()
    return torch.randn_like(x, device=devices.cpu).to(x.device)


def randn_without_seed(shape, generator=None):
    _check_source()
    return torch.randn(shape, device=devices.cpu, generator=generator).to(devices.device)


def manual_seed(seed):
    _check_source()
    torch.manual_seed(seed)


def create_generator(seed):
    # mirrors rng.create_generator
    _check_source()
    return torch.Generator(devices.cpu).manual_seed(int(seed))


def slerp(val, low, high):
    # mirrors rng.slerp: spherical interpolation used for variation seeds
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    # mirrors rng.ImageRNG: one generator per image seeded with that image's seed; first() gives the
    # initial noise (variation seed slerp and "resize seed from" included), next() further draws from
    # the same per-image generators (re-seeded with seed + ENSD after first() when ENSD is set)
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h = seed_resize_from_h
        self.seed_resize_from_w = seed_resize_from_w
        self.generators = [create_generator(seed) for seed in seeds]
        self.is_first = True

    def first(self):
        resized = self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0
        noise_shape = (
            (self.shape[0], int(self.seed_resize_from_h) // 8, int(self.seed_resize_from_w // 8)) if resized else self.shape
        )

        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = randn(subseed, noise_shape)

            if noise_shape != self.shape:
                noise = randn(seed, noise_shape)
            else:
                noise = randn(seed, self.shape, generator=generator)

            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)

            if noise_shape != self.shape:
                x = randn(seed, self.shape, generator=generator)
                dx = (self.shape[2] - noise_shape[2]) // 2
                dy = (self.shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx, ty = max(dx, 0), max(dy, 0)
                dx, dy = max(-dx, 0), max(-dy, 0)
                x[:, ty : ty + h, tx : tx + w] = noise[:, dy : dy + h, dx : dx + w]
                noise = x

            xs.append(noise)

        ensd = shared.opts.eta_noise_seed_delta or 0
        if ensd:
            self.generators = [create_generator(seed + ensd) for seed in self.seeds]

        return torch.stack(xs).to(shared.device)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([randn_without_seed(self.shape, generator=generator) for generator in self.generators]).to(
            shared.device
        )


devices.randn = randn
devices.randn_local = randn_local
devices.randn_like = randn_like
devices.randn_without_seed = randn_without_seed
devices.manual_seed = manual_seed
