"""Stand-in for Forge's ``backend/sampling/sampling_function.py``: one denoiser evaluation with
classifier-free guidance, ``calc_cond_uncond_batch`` and ``sampling_function_inner``, and the
preparation around sampling, ``sampling_prepare`` and ``sampling_cleanup``; and ``sampling_function``,
the model call of the WebUI's CFG denoiser in Forge.

Conditioning is Forge's compiled form (``backend/sampling/condition.py``, ``compile_conditions``):
``cond`` and ``uncond`` are lists of entries, one per prompt (one per AND sub-prompt for ``cond``),
each with ``model_conds`` (``c_crossattn``, optionally ``c_concat`` and ``y``), an optional
``strength`` (the AND weight, default 1) and an optional ``control`` (a ControlNet chain: its
``get_control(x, timesteps, c, chunks)`` gives the call's residuals). No areas, masks, timestep ranges
or pre/post-CFG hooks.

What is kept from Forge, because hooks observe it:

- each entry becomes one *chunk*: all images of ``x`` once, with that entry's conditions;
- chunks are taken from the back of the queue [cond..., uncond...], so the uncond chunk runs first
  and AND sub-prompts run last-first; chunks that share a U-Net call are concatenated in that order;
- each call gets a shallow copy of ``model_options["transformer_options"]`` plus ``cond_or_uncond``
  (0 = cond, 1 = uncond, one per chunk), ``sigmas`` (one per image), ``cond_mark`` (the same per row),
  ``cond_indices`` and ``uncond_indices`` (row numbers);
- the control of the call's last chunk, every link of it handed the call's transformer options and
  the newest asked for the call's residuals, goes in as ``control``;
- ``model_options["model_function_wrapper"]``, when set, is called instead of ``apply_model``;
- at CFG scale 1 the uncond is not evaluated, unless ``model_options["disable_cfg1_optimization"]``.

Memory pressure: Forge puts all waiting chunks in one call when free memory allows, otherwise it tries
n // 2, n // 3, ... chunks. Here the module variable ``MAX_CHUNKS_PER_CALL`` plays free memory:
``None`` (default) means no limit; ``1`` gives Forge's lowest-memory behaviour (uncond alone, then each
cond chunk alone). Tests may set it directly (``monkeypatch.setattr``) or wrap ``chunks_per_call``.
"""

from __future__ import annotations

import math

import torch

from backend.sampling.condition import Condition, compile_conditions, compile_weighted_conditions

COND = 0
UNCOND = 1

MAX_CHUNKS_PER_CALL = None


def chunks_per_call(waiting: int) -> int:
    """How many of ``waiting`` chunks the next U-Net call takes: the first of waiting, waiting // 2,
    waiting // 3, ... that does not exceed ``MAX_CHUNKS_PER_CALL`` (never fewer than one)."""
    if MAX_CHUNKS_PER_CALL is None:
        return waiting
    divisor = 1
    while waiting // divisor > MAX_CHUNKS_PER_CALL:
        divisor += 1
    return max(1, waiting // divisor)


def _joined(batch: list, images: int, device) -> dict:
    """The U-Net keywords of one call: each entry's conditions made for ``images`` images, joined
    across the call's chunks in order."""
    made = [{name: value.process_cond(batch_size=images, device=device) for name, value in entry["model_conds"].items()}
            for entry, _ in batch]
    return {name: made[0][name].concat([conditions[name] for conditions in made[1:]]) for name in made[0]}


def _call_options(model_options: dict, kinds: list, sigmas: torch.Tensor) -> dict:
    options = dict(model_options.get("transformer_options", {}))
    per_chunk = sigmas.shape[0]
    options["cond_or_uncond"] = list(kinds)
    options["sigmas"] = sigmas
    options["cond_mark"] = torch.tensor([float(kind) for kind in kinds for _ in range(per_chunk)]).to(sigmas)
    rows = {COND: [], UNCOND: []}
    for position, kind in enumerate(kinds):
        rows[kind].extend(range(position * per_chunk, (position + 1) * per_chunk))
    options["cond_indices"], options["uncond_indices"] = rows[COND], rows[UNCOND]
    return options


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    """Mirrors ``calc_cond_uncond_batch``: evaluate every cond and uncond entry on ``x_in`` and return
    (cond prediction, uncond prediction), each the strength-weighted mean over its entries (zeros for
    a side with no entries). ``model`` is the ``KModel``; ``timestep`` holds one sigma per image."""
    images = x_in.shape[0]
    queue = [(entry, COND) for entry in cond] + [(entry, UNCOND) for entry in (uncond or [])]
    totals = {COND: torch.zeros_like(x_in), UNCOND: torch.zeros_like(x_in)}
    weights = {COND: 1e-37, UNCOND: 1e-37}

    while queue:
        count = chunks_per_call(len(queue))
        batch = queue[len(queue) - count:][::-1]
        del queue[len(queue) - count:]
        kinds = [kind for _, kind in batch]

        c = _joined(batch, images, x_in.device)
        c["transformer_options"] = _call_options(model_options, kinds, timestep)
        rows_in = torch.cat([x_in] * len(batch))
        rows_t = torch.cat([timestep] * len(batch))
        control = batch[-1][0].get("control")
        if control is not None:
            link = control
            while link is not None:
                link.transformer_options = c["transformer_options"]
                link = getattr(link, "previous_controlnet", None)
            c["control"] = control.get_control(rows_in, rows_t, dict(c), len(batch))
        wrapper = model_options.get("model_function_wrapper")
        if wrapper is not None:
            output = wrapper(model.apply_model, {"input": rows_in, "timestep": rows_t, "c": c, "cond_or_uncond": kinds})
        else:
            output = model.apply_model(rows_in, rows_t, **c)

        for (entry, kind), piece in zip(batch, output.chunk(len(batch))):
            strength = entry.get("strength", 1.0)
            totals[kind] = totals[kind] + piece * strength
            weights[kind] = weights[kind] + strength

    return totals[COND] / weights[COND], totals[UNCOND] / weights[UNCOND]


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None, return_full=False):
    """Mirrors ``sampling_function_inner``: classifier-free guidance
    ``uncond + (cond - uncond) * cond_scale``, the difference further multiplied by the sum of the cond
    strengths when that is not 1 (so AND sub-prompts add up). At ``cond_scale`` 1 the uncond is skipped
    (its prediction is then zero) unless ``disable_cfg1_optimization``. ``return_full`` also returns
    the two predictions. Simplified: no sampler (pre/post) CFG functions; ``seed`` is unused."""
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, None if skip_uncond else uncond, x, timestep,
                                                    model_options)
    total_strength = sum(entry.get("strength", 1.0) for entry in cond)
    gain = cond_scale if math.isclose(total_strength, 1.0) else cond_scale * total_strength
    guided = uncond_pred + (cond_pred - uncond_pred) * gain
    return (guided, cond_pred, uncond_pred) if return_full else guided



def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    """Mirrors ``sampling_function``, the model call of Forge's ``CFGDenoiser.forward``: the patcher is
    ``self.inner_model.inner_model.forge_objects.unet`` (whatever the pass put there); the WebUI's
    conditioning is compiled (the cond per AND position with its weight); image conditioning that
    matches ``x`` in batch and size goes to every entry as ``c_concat``; the patcher's ControlNet chain
    becomes every entry's ``control``; the patcher's ``conditioning_modifiers`` run in order; then
    ``sampling_function_inner``. Returns (guided, cond prediction, uncond prediction). Simplified: no
    ``extra_concat_condition``."""
    patcher = self.inner_model.inner_model.forge_objects.unet
    x, sigma = denoiser_params.x, denoiser_params.sigma
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)
    image_cond = denoiser_params.image_cond
    fits = isinstance(image_cond, torch.Tensor) and image_cond.shape[0] == x.shape[0] and image_cond.shape[2:] == x.shape[2:]
    for entry in cond + (uncond or []):
        if fits:
            entry["model_conds"]["c_concat"] = Condition(image_cond)
        if patcher.controlnet_linked_list is not None:
            entry["control"] = patcher.controlnet_linked_list
    model, options, seed = patcher.model, patcher.model_options, self.p.seeds[0]
    for modifier in options.get("conditioning_modifiers", []):
        model, x, sigma, uncond, cond, cond_scale, options, seed = modifier(model, x, sigma, uncond, cond, cond_scale,
                                                                             options, seed)
    return sampling_function_inner(model, x, sigma, uncond, cond, cond_scale, options, seed, return_full=True)


EVENTS = []
"""What ``sampling_prepare`` and ``sampling_cleanup`` did, in order: ``("prepare" | "cleanup", patcher)``."""


def sampling_prepare(unet, x):
    """Mirrors ``sampling_prepare``: before sampling ``x``, Forge loads the patcher's models (and
    places LoRA weights) and lets every ControlNet of its chain set up its schedule (``pre_run``).
    Here: recorded in ``EVENTS``, and ``pre_run(model)`` called down the chain."""
    EVENTS.append(("prepare", unet))
    link = unet.controlnet_linked_list
    while link is not None:
        link.pre_run(unet.model)
        link = getattr(link, "previous_controlnet", None)


def sampling_cleanup(unet):
    """Mirrors ``sampling_cleanup``: after sampling, every ControlNet of the chain drops its
    per-sampling state (``cleanup``). Here: recorded in ``EVENTS`` and ``cleanup()`` called."""
    EVENTS.append(("cleanup", unet))
    link = unet.controlnet_linked_list
    while link is not None:
        link.cleanup()
        link = getattr(link, "previous_controlnet", None)
