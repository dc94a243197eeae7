"""What the WebUI's sampler is about to do in a pass: the noise levels it samples, one per step,
and whether it draws fresh noise while it samples."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from modules import sd_samplers_common, shared

from ..settings import SettingsError
from ..steps import PassSteps


def _img2img_steps(p: Any, hires: bool) -> tuple:
    """``setup_img2img_steps`` as the pass calls it: the hires pass asks for its own step count,
    img2img for none (sd_samplers_kdiffusion.py and sd_samplers_timesteps.py, ``sample_img2img``)."""
    return sd_samplers_common.setup_img2img_steps(p, (p.hr_second_pass_steps or p.steps) if hires else None)


def pass_steps(p: Any, hires: bool) -> PassSteps:
    """The noise levels the pass samples, computed as the sampler computes them: the sigma
    schedule of a k-diffusion sampler (img2img and the hires pass sample its last ``t_enc + 1``
    levels), or the timesteps a timestep sampler (DDIM, PLMS, UniPC) calls the model at. Raises
    :class:`SettingsError` for a sampler that has neither, whose steps cannot be known."""
    sampler = p.sampler
    img2img = hires or hasattr(p, "init_images")
    if hasattr(sampler, "get_sigmas"):
        if img2img:
            steps, t_enc = _img2img_steps(p, hires)
            sigmas = sampler.get_sigmas(p, steps)[steps - t_enc - 1:]
        else:
            sigmas = sampler.get_sigmas(p, p.steps)
        return PassSteps.from_levels(sigmas[:-1])
    if hasattr(sampler, "get_timesteps"):
        if img2img:
            steps, t_enc = _img2img_steps(p, hires)
            timesteps = sampler.get_timesteps(p, steps)[:t_enc]
        else:
            timesteps = sampler.get_timesteps(p, p.steps)
        # The timestep samplers call the model at every timestep but the lowest, highest first
        # (sd_samplers_timesteps_impl.py).
        return PassSteps.from_levels(torch.flip(torch.as_tensor(timesteps), (0,))[:-1])
    raise SettingsError(
        f"MasaCtrl cannot tell the steps of the {p.sampler_name} sampler (it has neither a sigma nor a timestep "
        "schedule), so it cannot start and end control at the steps you set; choose another sampler"
    )


def pass_name(p: Any, hires: bool, steps: PassSteps) -> str:
    """How notes name the pass, with the steps it samples where that differs from the step count."""
    if hires:
        return f"the hires fix pass, which samples {len(steps)} steps"
    if hasattr(p, "init_images"):
        return f"this img2img generation, which samples {len(steps)} of {p.steps} steps at denoising strength " \
               f"{p.denoising_strength:g}"
    return "this generation"


class NoiseWatch:
    """Whether a sampler added fresh noise during one pass, from what it really did with the
    values the WebUI gave it, not from its name.

    k-diffusion's samplers draw noise on every step whether they use it or not (``sample_euler``
    draws its churn noise, the ancestral and SDE samplers multiply theirs by a step size that is 0
    at eta 0), so a draw alone proves nothing. A sampler adds noise when it takes an ``eta`` and
    ran with eta above 0 (Euler a, DPM2 a, DPM++ 2S a, the SDE samplers, DPM fast and DPM adaptive,
    whose default eta is 1), when it takes an ``s_churn`` and ran with sigma churn above 0
    (Euler, Heun, DPM2), and, for a sampler that takes neither, when it drew noise at all: LCM on
    every step, Restart when it re-noises. Draws are seen where the WebUI hands them out, on these
    objects only, which it makes anew for every batch and pass: ``p.rng.next()``, behind
    ``TorchHijack.randn_like`` (sd_samplers_common.py), and the Brownian-tree noise samplers of
    ``create_noise_sampler`` (sd_samplers_kdiffusion.py)."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.sampler = getattr(p, "sampler", None)
        self.draws = 0
        self._wrapped = []
        rng = getattr(p, "rng", None)
        if rng is not None and hasattr(rng, "next"):
            self._wrap(rng, "next", self._counting)
        if self.sampler is not None and hasattr(self.sampler, "create_noise_sampler"):
            self._wrap(self.sampler, "create_noise_sampler", lambda original: lambda *args, **kwargs: self._counting(
                original(*args, **kwargs)))

    def _wrap(self, owner: Any, name: str, wrapper: Callable[[Callable], Callable]) -> None:
        self._wrapped.append((owner, name, vars(owner).get(name), name in vars(owner)))
        setattr(owner, name, wrapper(getattr(owner, name)))

    def _counting(self, draw: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.draws += 1
            return draw(*args, **kwargs)

        return counted

    @property
    def added_noise(self) -> bool:
        function = getattr(self.sampler, "func", None)
        try:
            parameters = inspect.signature(function).parameters if callable(function) else {}
        except (TypeError, ValueError):
            parameters = {}
        if "eta" in parameters:
            return bool(getattr(self.sampler, "eta", 1.0) or 0)
        if "s_churn" in parameters:
            return float(getattr(shared.opts, "s_churn", getattr(self.p, "s_churn", 0.0)) or 0) > 0
        return self.draws > 0

    def close(self) -> None:
        """Give the objects their own methods back."""
        for owner, name, own, had_own in reversed(self._wrapped):
            if had_own:
                setattr(owner, name, own)
            else:
                vars(owner).pop(name, None)
        self._wrapped.clear()
