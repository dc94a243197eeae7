"""Stand-in for the ControlNet extension's U-Net hook (Mikubill/sd-webui-controlnet v1.1.455), for tests only.

Real files it stands in for: ``scripts/hook.py`` (``UnetHook``, ``ControlParams``, the cond/uncond
prompt marks and the reference-only / StyleAlign transformer hijack), ``scripts/enums.py``
(``ControlModelType``, ``ControlMode``, ``AutoMachine``), ``scripts/cldm.py``
(``PlugableControlModel``), ``scripts/adapter.py`` (``PlugableAdapter``) and ``scripts/controlnet.py``
(``clear_all_secondary_control_models``, and how ``controlnet_main_entry`` turns a unit into
``ControlParams``). The extension's ``Script`` itself is written by tests/test_script_controlnet.py.

MasaCtrl never imports ControlNet; it reads the hook's ``control_params`` and
``attention_auto_machine``, each unit's ``control_model``, ``control_model_type``, ``cfg_injection``,
``preprocessor`` and ``hint_cond``, and it sees the U-Net's ``forward`` replaced per instance. Those
names and that call protocol are kept. Left out, because no test reaches them: VAE encoding of
reference images (a reference unit's hint is taken as its latent), inpainting models, ControlNet's
own hires-fix option, advanced weighting, global average pooling, IP-Adapter and the other
attention-patching model types, GroupNorm (AdaIN) hijacks, low-VRAM moves and the WebUI callback
registry (tests call :meth:`UnetHook.guidance_schedule_handler` as ``on_cfg_denoiser`` would).

The control models are tiny seeded convolution stacks, not copies of ControlNet's networks: what
matters is that they return residuals of the right shapes that depend on each row's latent, the
timestep, the text and the hint.
"""

from __future__ import annotations

import copy
import enum
import types
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.attention import BasicTransformerBlock
from ldm.modules.diffusionmodules.openaimodel import UNetModel
from ldm.modules.diffusionmodules.util import timestep_embedding

# Input blocks of an SD1.x U-Net after which hook.py adds the T2I-Adapter's four features.
ADAPTER_BLOCKS = (2, 5, 8, 11)

# What the hooked forward and the guidance handler write on the U-Net (and never take off again,
# in the real extension either): tests leave them out of before/after comparisons.
PER_CALL_ATTRIBUTES = frozenset({"cond_mark", "current_h_shape", "is_in_high_res_fix", "current_sampling_percent"})


class ControlModelType(enum.Enum):
    """scripts/enums.py ``ControlModelType``: the kind of model a unit runs. Only the kinds the tests
    build; MasaCtrl reads the member names, never the values (the real values name the authors)."""

    ControlNet = "controlnet"
    T2I_Adapter = "t2i adapter"
    T2I_StyleAdapter = "t2i style adapter"
    IPAdapter = "ip-adapter"
    AttentionInjection = "reference"


class ControlMode(enum.Enum):
    """scripts/enums.py ``ControlMode``: the unit's "Control Mode" radio."""

    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class AutoMachine(enum.Enum):
    """scripts/enums.py ``AutoMachine``: what the hijacked self-attention does with its bank of
    reference features (``Write`` during a reference pass, ``Read`` otherwise), or ``StyleAlign``."""

    Read = "Read"
    Write = "Write"
    StyleAlign = "StyleAlign"


# --- prompt marks ----------------------------------------------------------------------------

MARK = 1024.0
"""hook.py ``POSITIVE_MARK_TOKEN``: the value of the extra token ControlNet puts in front of every
cond prompt's conditioning (uncond prompts get ``-MARK``), so the U-Net can tell the rows apart."""
MARK_TOLERANCE = 1e-3


def mark_rows(context: torch.Tensor, cond: Sequence[bool]) -> torch.Tensor:
    """A stacked context as the U-Net receives it once hook.py's ``mark_prompt_context`` has marked
    each prompt (during ``process_sample``) and the WebUI has stacked them: one more leading token
    per row, ``+MARK`` on cond rows and ``-MARK`` on uncond rows."""
    signs = torch.tensor([1.0 if is_cond else -1.0 for is_cond in cond], dtype=context.dtype)
    token = (signs * MARK)[:, None, None].expand(-1, 1, context.shape[-1])
    return torch.cat([token, context], dim=1)


@dataclass
class RowMarks:
    """What hook.py's ``unmark_prompt_context`` learns from a U-Net call's context."""

    cond: torch.Tensor
    """1.0 for a cond row, 0.0 for an uncond row, shaped ``(rows, 1, 1, 1)``."""
    cond_rows: List[int]
    uncond_rows: List[int]


def read_marks(context: torch.Tensor) -> Tuple[RowMarks, torch.Tensor]:
    """hook.py ``unmark_prompt_context``: the row marks and the context without its mark token (a
    strided view, as ControlNet hands it on). A context without marks counts as all cond, with
    neither row list known."""
    first = context[:, 0, :]
    if float((first.abs() - MARK).abs().mean()) >= MARK_TOLERANCE:
        return RowMarks(torch.ones(context.shape[0], 1, 1, 1, dtype=context.dtype), [], []), context
    is_cond = ((first + MARK).abs().mean(dim=1) > MARK_TOLERANCE).tolist()
    marks = RowMarks(
        cond=torch.tensor(is_cond, dtype=context.dtype).view(-1, 1, 1, 1),
        cond_rows=[row for row, flag in enumerate(is_cond) if flag],
        uncond_rows=[row for row, flag in enumerate(is_cond) if not flag],
    )
    return marks, context[:, 1:, :]


# --- units -----------------------------------------------------------------------------------


@dataclass(eq=False)
class ControlParams:
    """hook.py ``ControlParams``: one enabled unit as the hooked forward uses it, rebuilt for every
    generation. Only the fields this stand-in's forward reads; every field exists from the start
    (``used_hint_cond`` and ``used_hint_cond_latent`` are filled on the first U-Net call)."""

    control_model: Any
    control_model_type: ControlModelType
    hint_cond: torch.Tensor
    preprocessor: Dict[str, Any]
    weight: float = 1.0
    start_guidance_percent: float = 0.0
    stop_guidance_percent: float = 1.0
    soft_injection: bool = False
    cfg_injection: bool = False
    hr_hint_cond: torch.Tensor | None = None
    guidance_stopped: bool = False
    used_hint_cond: torch.Tensor | None = None
    used_hint_cond_latent: torch.Tensor | None = None


def unit_params(
    control_model: Any,
    model_type: ControlModelType,
    hint: torch.Tensor,
    *,
    module: str = "none",
    weight: float = 1.0,
    guidance_start: float = 0.0,
    guidance_end: float = 1.0,
    control_mode: ControlMode = ControlMode.BALANCED,
    hr_hint: torch.Tensor | None = None,
    threshold_a: float = 0.5,
) -> ControlParams:
    """A unit's ``ControlParams`` as controlnet.py ``controlnet_main_entry`` derives them from a
    ``ControlNetUnit``: any mode but "Balanced" injects softly, "ControlNet is more important" also
    keeps the control off the uncond rows."""
    return ControlParams(
        control_model=control_model,
        control_model_type=model_type,
        hint_cond=hint,
        hr_hint_cond=hr_hint,
        preprocessor={"name": module, "threshold_a": threshold_a},
        weight=weight,
        start_guidance_percent=guidance_start,
        stop_guidance_percent=guidance_end,
        soft_injection=control_mode is not ControlMode.BALANCED,
        cfg_injection=control_mode is ControlMode.CONTROL,
    )


# --- tiny control models ---------------------------------------------------------------------


def _feature_sizes(unet: UNetModel) -> List[Tuple[int, int]]:
    """``(channels, downscale)`` of every skip feature (one per input block) and of the middle
    block's output, found by running the encoder on an 8x8 zero latent."""
    context_dim = _context_dim(unet)
    sizes = []
    with torch.no_grad():
        emb = unet.time_embed(timestep_embedding(torch.zeros(1), unet.model_channels))
        h = torch.zeros(1, unet.in_channels, 8, 8)
        for block in [*unet.input_blocks, unet.middle_block]:
            h = block(h, emb, torch.zeros(1, 1, context_dim))
            sizes.append((h.shape[1], 8 // h.shape[2]))
    return sizes


def _context_dim(unet: UNetModel) -> int:
    return next(m for m in unet.modules() if isinstance(m, BasicTransformerBlock)).attn2.to_k.in_features


def _conv(draw: torch.Generator, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int | None = None) -> nn.Conv2d:
    """A convolution whose weights come from ``draw`` (variance kept near 1), not from torch's global RNG."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if padding is None else padding)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=draw) / (c_in * kernel * kernel) ** 0.5)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=draw) * 0.1)
    return conv


def _down_chain(draw: torch.Generator, start: Tuple[int, int], sizes: Sequence[Tuple[int, int]]) -> nn.ModuleList:
    """Convolutions that walk from feature size ``start`` through ``sizes``, striding where the scale grows."""
    convs = []
    for channels, scale in sizes:
        convs.append(_conv(draw, start[0], channels, 3, stride=scale // start[1]))
        start = (channels, scale)
    return nn.ModuleList(convs)


class TinyControlNet(nn.Module):
    """A small model with cldm.py ``ControlNet``'s interface: the hint (pixels, one row for the
    whole batch or one per row) is encoded down to latent size and added to the encoded ``x``, and
    one residual per skip feature plus one for the middle block comes out (13 for SD1.x), with the
    rows of ``x``, each depending on its row's latent, timestep and text."""

    def __init__(self, unet: UNetModel, seed: int = 0, hint_channels: int = 3) -> None:
        super().__init__()
        draw = torch.Generator().manual_seed(seed)
        sizes = _feature_sizes(unet)
        width = unet.model_channels
        self.model_channels = width
        hint_layers: List[nn.Module] = []
        for c_in, c_out, stride in zip([hint_channels, 16, 32, 32], [16, 32, 32, width], [1, 2, 2, 2]):
            hint_layers += [_conv(draw, c_in, c_out, 3, stride=stride), nn.SiLU()]
        self.hint_encoder = nn.Sequential(*hint_layers[:-1])
        self.latent_stem = _conv(draw, unet.in_channels, width, 3)
        self.stages = _down_chain(draw, (width, 1), sizes)
        total = sum(channels for channels, _ in sizes)
        self.time_to_bias = nn.Linear(width, total, bias=False)
        self.text_to_bias = nn.Linear(_context_dim(unet), total, bias=False)
        with torch.no_grad():
            for linear in (self.time_to_bias, self.text_to_bias):
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=draw) / linear.in_features**0.5)
        self.outputs = nn.ModuleList(_conv(draw, channels, channels, 1) for channels, _ in sizes)
        self.eval().requires_grad_(False)

    def forward(self, x, hint, timesteps, context, y=None, **kwargs) -> List[torch.Tensor]:
        step = timestep_embedding(timesteps, self.model_channels, repeat_only=False)
        biases = self.time_to_bias(step) + self.text_to_bias(context.mean(dim=1))
        h = self.latent_stem(x) + self.hint_encoder(hint)
        residuals = []
        for stage, output, bias in zip(self.stages, self.outputs, biases.split([s.out_channels for s in self.stages], dim=1)):
            h = F.silu(stage(h) + bias[:, :, None, None])
            residuals.append(output(h))
        return residuals


class TinyAdapter(nn.Module):
    """A small model with adapter.py ``Adapter``'s interface: features from the hint alone (so with
    the hint's rows, not the batch's), one per injection point in :data:`ADAPTER_BLOCKS`."""

    def __init__(self, unet: UNetModel, seed: int = 1, hint_channels: int = 3) -> None:
        super().__init__()
        draw = torch.Generator().manual_seed(seed)
        sizes = _feature_sizes(unet)
        self.patchify = _conv(draw, hint_channels, unet.model_channels, 8, stride=8, padding=0)
        self.stages = _down_chain(draw, (unet.model_channels, 1), [sizes[block] for block in ADAPTER_BLOCKS])
        self.eval().requires_grad_(False)

    def forward(self, hint: torch.Tensor) -> List[torch.Tensor]:
        h = self.patchify(hint)
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features


class PlugableControlModel(nn.Module):
    """cldm.py ``PlugableControlModel``: what a ControlNet unit's ``control_model`` holds; the
    extension's model cache hands one object to every unit that loads the same model. Memory moves
    are no-ops here (everything stays on the CPU)."""

    is_control_lora = False

    def __init__(self, control_model: nn.Module) -> None:
        super().__init__()
        self.control_model = control_model

    def forward(self, *args: Any, **kwargs: Any) -> List[torch.Tensor]:
        return self.control_model(*args, **kwargs)

    def reset(self) -> None:
        """Called by ``controlnet_main_entry`` before every generation; a ControlNet keeps no state."""

    def fullvram(self) -> None:
        """Called by the hooked forward before the model runs (to the ControlNet device in the real one)."""


class PlugableAdapter(nn.Module):
    """adapter.py ``PlugableAdapter``: the features depend on the hint only, so they are computed on
    the first call of a generation and a fresh copy of them is handed out on every later call,
    until ``reset``."""

    def __init__(self, control_model: nn.Module) -> None:
        super().__init__()
        self.control_model = control_model
        self.control: List[torch.Tensor] | None = None

    def forward(self, hint: torch.Tensor | None = None, x: torch.Tensor | None = None, *args: Any, **kwargs: Any):
        if self.control is None:
            self.control = self.control_model(hint)
        return copy.deepcopy(self.control)

    def reset(self) -> None:
        self.control = None

    def fullvram(self) -> None:
        """As :meth:`PlugableControlModel.fullvram`."""


# --- the U-Net hook --------------------------------------------------------------------------

# Model types whose residuals hook.py adds to the skip connections and the middle block.
_SKIP_TYPES = frozenset({ControlModelType.ControlNet})
# Preprocessors of reference units that store the reference's self-attention features.
_REFERENCE_ATTENTION = frozenset({"reference_only", "reference_adain+attn"})


def _add(feature: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """hook.py ``aligned_adding`` without the inpaint channel padding: ``None`` adds nothing; a
    residual of another spatial size (but not a pooled 1x1 one) is resized to the feature first."""
    if extra is None:
        return feature
    if extra.shape[-2:] != feature.shape[-2:] and extra.shape[-2:] != (1, 1):
        extra = F.interpolate(extra, size=feature.shape[-2:], mode="nearest")
    return feature + extra


def _soft_scales(param: ControlParams, count: int) -> List[float]:
    """hook.py's soft injection ("My prompt is more important"): a ControlNet's residuals fade by
    0.825 per level away from the middle block; an adapter's four features get fixed fractions."""
    if param.control_model_type is ControlModelType.T2I_Adapter:
        return [param.weight * share for share in (0.25, 0.62, 0.825, 1.0)]
    return [param.weight * 0.825 ** float(count - 1 - level) for level in range(count)]


def clear_all_secondary_control_models(unet: nn.Module) -> None:
    """controlnet.py ``clear_all_secondary_control_models``: run before every ControlNet generation
    and in ``Script.postprocess``; gives every transformer block the ``_forward`` stashed when it
    was first hijacked, as an instance attribute."""
    for module in unet.modules():
        stashed = getattr(module, "_original_inner_forward_cn_hijack", None)
        if stashed is not None:
            module._forward = stashed


class UnetHook:
    """hook.py ``UnetHook``: replaces one U-Net's ``forward`` for a generation with one that adds
    every running unit's control. ``hook`` takes the U-Net, the units and the two "Batch Options"
    (``Script.ui_batch_option_state``); the real one also takes the checkpoint and ``p`` (for VAE
    encoding and for marking the prompts around ``p.sample``), which tests replace with latents
    given directly and :func:`mark_rows`.

    Test instrumentation, not in the real hook: ``residual_log`` gets, per U-Net call, each running
    unit's residuals (by index in ``control_params``) as they were added, after all scaling."""

    def __init__(self) -> None:
        self.model: UNetModel | None = None
        self.control_params: List[ControlParams] | None = None
        self.attention_auto_machine = AutoMachine.Read
        self.residual_log: List[Dict[int, List[torch.Tensor]]] = []
        self._separate_units = False
        self._unhooked_forward: Any = None
        self._hijacked_blocks: List[BasicTransformerBlock] = []
        self._marks = RowMarks(torch.ones(1, 1, 1, 1), [], [])
        self._in_hires = False
        self._bank_weight = 1.0
        self._style_fidelity = 0.0

    # --- lifecycle -----------------------------------------------------------------------------

    def hook(
        self,
        model: UNetModel,
        control_params: List[ControlParams],
        batch_option_uint_separate: bool = False,
        batch_option_style_align: bool = False,
    ) -> None:
        """Install the hooked ``forward`` on ``model`` (stashing the current one, instance attribute
        or class method, as ``model._original_forward``), and hijack the transformer blocks when a
        reference unit or StyleAlign needs their self-attention."""
        self.model = model
        self.control_params = control_params
        self._separate_units = batch_option_uint_separate
        if batch_option_style_align:
            self.attention_auto_machine = AutoMachine.StyleAlign

        self._unhooked_forward = model.forward
        model._original_forward = model.forward
        hook = self

        def forward(unet: UNetModel, x, timesteps=None, context=None, y=None, **kwargs):
            return hook._controlled_forward(unet, x, timesteps, context, y)

        model.forward = types.MethodType(forward, model)

        wants_blocks = batch_option_style_align or any(
            param.control_model_type is ControlModelType.AttentionInjection for param in control_params
        )
        if wants_blocks:
            self._hijack_blocks(model)
        else:
            clear_all_secondary_control_models(model)
            self._hijacked_blocks = []

    def restore(self) -> None:
        """hook.py ``UnetHook.restore``: forget the units and put the stashed ``forward`` back. Like
        the real one it assigns it as an instance attribute (a bound method when the U-Net had none)
        instead of deleting the attribute, and leaves the transformer blocks to the next ``hook``
        or :func:`clear_all_secondary_control_models`."""
        self.control_params = None
        if self.model is not None and hasattr(self.model, "_original_forward"):
            self.model.forward = self.model._original_forward
            del self.model._original_forward

    def guidance_schedule_handler(self, params: Any) -> None:
        """hook.py, an ``on_cfg_denoiser`` callback (``params`` is a ``CFGDenoiserParams``): a unit
        runs only while the step's share of the sampling lies between its guidance start and end."""
        if not self.control_params:
            return
        progress = params.sampling_step / params.total_sampling_steps
        for param in self.control_params:
            param.guidance_stopped = not param.start_guidance_percent <= progress <= param.stop_guidance_percent
        if self.model is not None:
            self.model.current_sampling_percent = progress

    # --- one U-Net call ------------------------------------------------------------------------

    def _controlled_forward(self, unet: UNetModel, x: torch.Tensor, timesteps, context, y) -> torch.Tensor:
        self._marks, context = read_marks(context)
        unet.cond_mark = self._marks.cond
        self._in_hires = self._choose_hints(x)
        unet.is_in_high_res_fix = self._in_hires
        params = self.control_params or []
        for param in params:
            if not getattr(param.control_model, "disable_memory_management", False) and hasattr(param.control_model, "fullvram"):
                param.control_model.fullvram()

        skip_extras: List[torch.Tensor | None] = [None] * (len(unet.input_blocks) + 1)
        adapter_extras: List[torch.Tensor | None] = [None] * len(ADAPTER_BLOCKS)
        log: Dict[int, List[torch.Tensor]] = {}
        for index, param in enumerate(params):
            kind = param.control_model_type
            if param.guidance_stopped or (kind not in _SKIP_TYPES and kind is not ControlModelType.T2I_Adapter):
                continue
            residuals = self._unit_residuals(index, param, x, timesteps, context, y)
            totals = skip_extras if kind in _SKIP_TYPES else adapter_extras
            for level, residual in enumerate(residuals):
                totals[level] = residual if totals[level] is None else residual + totals[level]
            log[index] = residuals
        self.residual_log.append(log)

        self._reference_passes(x, timesteps, context)
        return self._run_unet(unet, x, timesteps, context, y, skip_extras, adapter_extras)

    def _choose_hints(self, x: torch.Tensor) -> bool:
        """hook.py's hires-fix handling: a unit with a hires hint uses whichever of its two hints is
        nearer the call's size in pixels. Returns whether this is the hires pass."""
        in_hires = False
        pixels = x.shape[2] * 8
        for param in self.control_params or []:
            param.used_hint_cond = param.hint_cond
            if param.hr_hint_cond is not None:
                in_hires = abs(pixels - param.hr_hint_cond.shape[2]) <= abs(pixels - param.hint_cond.shape[2])
                if in_hires:
                    param.used_hint_cond = param.hr_hint_cond
        return in_hires

    def _unit_residuals(self, index: int, param: ControlParams, x, timesteps, context, y) -> List[torch.Tensor]:
        """One unit's control for this call, scaled as hook.py scales it: kept off uncond rows in
        "ControlNet is more important" mode, by the unit's weight (graded in soft injection, which
        the hires pass forces on canny and mlsd units), and, with the "each ControlNet unit for each
        image" batch option, only on the cond and uncond rows whose position goes to this unit."""
        hint = param.used_hint_cond
        residuals = param.control_model(x=x, hint=hint, timesteps=timesteps, context=context, y=y, control_type=None)
        if param.cfg_injection:
            if param.control_model_type is ControlModelType.T2I_Adapter:
                residuals = [feature.repeat(x.shape[0], *(1,) * (feature.dim() - 1)) for feature in residuals]
            residuals = [residual * self._marks.cond for residual in residuals]
        forced_soft = self._in_hires and any(name in param.preprocessor["name"] for name in ("canny", "mlsd"))
        if param.soft_injection or forced_soft:
            scales = _soft_scales(param, len(residuals))
        else:
            scales = [param.weight] * len(residuals)
        residuals = [residual * scale for residual, scale in zip(residuals, scales)]
        if self._separate_units:
            units = len(self.control_params or [])
            others = [
                row
                for rows in (self._marks.cond_rows, self._marks.uncond_rows)
                for position, row in enumerate(rows)
                if position % units != index
            ]
            for residual in residuals:
                residual[others] = 0
        return residuals

    def _run_unet(self, unet: UNetModel, x, timesteps, context, y, skip_extras, adapter_extras) -> torch.Tensor:
        """The U-Net's own computation with the adapter features added inside the encoder and the
        ControlNet residuals added to the middle block's output and to every skip connection."""
        emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False))
        if y is not None:
            emb = emb + unet.label_emb(y)
        adapter_at = dict(zip(ADAPTER_BLOCKS, adapter_extras))
        h, skips = x, []
        for index, block in enumerate(unet.input_blocks):
            unet.current_h_shape = tuple(h.shape)
            h = _add(block(h, emb, context), adapter_at.get(index))
            skips.append(h)
        unet.current_h_shape = tuple(h.shape)
        h = _add(unet.middle_block(h, emb, context), skip_extras[-1])
        for block, skip, extra in zip(unet.output_blocks, reversed(skips), reversed(skip_extras[:-1])):
            unet.current_h_shape = tuple(h.shape)
            h = block(torch.cat([h, _add(skip, extra)], dim=1), emb, context)
        return unet.out(h.type(x.dtype))

    # --- reference-only and StyleAlign ---------------------------------------------------------

    def _reference_passes(self, x: torch.Tensor, timesteps, context) -> None:
        """hook.py's reference-only units: before the real pass, the unhooked U-Net runs on the
        (noised, in the real one) reference latent with the blocks in ``Write`` mode, filling each
        block's bank; the real pass then reads it. The stand-in scales the latent by 0.7 instead of
        adding noise. The style fidelity (the unit's first slider) is 1 in "ControlNet is more
        important" mode and 0 in the other non-balanced modes and in the hires pass."""
        for block in self._hijacked_blocks:
            block.bank, block.style_cfgs = [], []
        for param in self.control_params or []:
            if param.control_model_type is not ControlModelType.AttentionInjection or param.guidance_stopped:
                continue
            if param.used_hint_cond_latent is None:
                latent = param.used_hint_cond
                param.used_hint_cond_latent = latent if latent.shape[0] == x.shape[0] else latent.repeat(x.shape[0], 1, 1, 1)
            if param.cfg_injection:
                self._style_fidelity = 1.0
            elif param.soft_injection or self._in_hires:
                self._style_fidelity = 0.0
            else:
                self._style_fidelity = min(max(float(param.preprocessor["threshold_a"]), 0.0), 1.0)
            if param.preprocessor["name"] in _REFERENCE_ATTENTION:
                self.attention_auto_machine = AutoMachine.Write
                self._bank_weight = param.weight
            self._unhooked_forward(x=param.used_hint_cond_latent * 0.7, timesteps=timesteps, context=context)
            self.attention_auto_machine = AutoMachine.Read

    def _hijack_blocks(self, model: UNetModel) -> None:
        """Give every transformer block a per-instance ``_forward`` (stashing the first one it had as
        ``_original_inner_forward_cn_hijack``), an empty bank and an ``attn_weight`` from 0 for the
        widest blocks up: a reference unit of weight w writes only into blocks below w."""
        blocks = [module for module in model.modules() if isinstance(module, BasicTransformerBlock)]
        blocks.sort(key=lambda block: -block.norm1.normalized_shape[0])
        hook = self

        def block_forward(block: BasicTransformerBlock, x: torch.Tensor, context: torch.Tensor | None = None):
            x = hook._self_attention(block, block.norm1(x), context).to(x.dtype) + x
            x = block.attn2(block.norm2(x), context=context) + x
            return block.ff(block.norm3(x)) + x

        for rank, block in enumerate(blocks):
            if getattr(block, "_original_inner_forward_cn_hijack", None) is None:
                block._original_inner_forward_cn_hijack = block._forward
            block._forward = types.MethodType(block_forward, block)
            block.bank, block.style_cfgs = [], []
            block.attn_weight = rank / len(blocks)
        self._hijacked_blocks = blocks

    def _self_attention(self, block: BasicTransformerBlock, normed: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """hook.py ``hacked_basic_transformer_inner_forward``'s self-attention: always called with an
        explicit context (the block's own normalised input, extended by the bank when reading)."""
        if block.disable_self_attn:
            return block.attn1(normed, context=context)
        machine = self.attention_auto_machine
        if machine is AutoMachine.StyleAlign and not self._in_hires:
            return self._shared_attention(block, normed)
        if machine is AutoMachine.Write and self._bank_weight > block.attn_weight:
            block.bank.append(normed.detach().clone())
            block.style_cfgs.append(self._style_fidelity)
        if machine is AutoMachine.Read:
            bank, fidelities = block.bank, block.style_cfgs
            block.bank, block.style_cfgs = [], []
            if bank:
                return self._read_bank(block, normed, bank, sum(fidelities) / len(fidelities))
        return block.attn1(normed, context=normed)

    def _read_bank(self, block: BasicTransformerBlock, normed: torch.Tensor, bank: List[torch.Tensor], fidelity: float):
        """Every row attends over itself and the reference; with style fidelity f, uncond rows are
        blended towards their plain self-attention by f (so the reference acts through cond only)."""
        with_reference = block.attn1(normed, context=torch.cat([normed, *bank], dim=1))
        plain_uncond = with_reference.clone()
        uncond = self._marks.uncond_rows
        if uncond and fidelity > 1e-5:
            plain_uncond[uncond] = block.attn1(normed[uncond], context=normed[uncond])
        return fidelity * plain_uncond + (1.0 - fidelity) * with_reference

    def _shared_attention(self, block: BasicTransformerBlock, normed: torch.Tensor) -> torch.Tensor:
        """StyleAlign: the cond rows attend as one long sequence, and so do the uncond rows."""
        out = torch.zeros_like(normed)
        for rows in (self._marks.uncond_rows, self._marks.cond_rows):
            if rows:
                group = normed[rows]
                out[rows] = block.attn1(group.reshape(1, -1, group.shape[-1])).reshape(group.shape).to(out)
        return out
