"""A stand-in for what the ControlNet extension does to the U-Net, for tests only.

Written from Mikubill/sd-webui-controlnet v1.1.455 (commit 56cec5b), ``scripts/hook.py``,
``scripts/cldm.py``, ``scripts/adapter.py``, ``scripts/enums.py`` and ``scripts/controlnet.py``.
Each piece names what it mirrors. What it keeps is what matters to MasaCtrl: how the U-Net's
``forward`` is replaced per instance and put back, how each unit's residuals are made, scaled and
added, the cond/uncond marks, hires-fix hint selection, guidance start/end, the batch options and
the reference-only ``BasicTransformerBlock._forward`` replacement. Left out: VAE encoding (a
reference unit's hint is taken as a latent already), inpainting, colour fix, ReVision, the
T2I style adapter's extra tokens, AdaIN (GroupNorm) hijacks, low-VRAM moves, effective-region masks
and the WebUI callback registry (tests call :meth:`UnetHook.guidance_schedule_handler` themselves,
as ``on_cfg_denoiser`` would).
"""

from __future__ import annotations

import copy
import enum
from typing import Any, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ldm.modules.attention import BasicTransformerBlock
from ldm.modules.diffusionmodules.openaimodel import UNetModel
from ldm.modules.diffusionmodules.util import timestep_embedding

# --- scripts/hook.py: cond/uncond marks --------------------------------------------------------

POSITIVE_MARK_TOKEN = 1024
NEGATIVE_MARK_TOKEN = -POSITIVE_MARK_TOKEN
MARK_EPS = 1e-3


def mark_rows(context: torch.Tensor, cond: Sequence[bool]) -> torch.Tensor:
    """The stacked result of hook.py's ``mark_prompt_context``: ControlNet's ``process_sample``
    prepends one token of +1024 (cond) or -1024 (uncond) to every prompt's conditioning before
    the WebUI stacks the rows, so each row of the context the U-Net gets is one token longer."""
    marks = torch.tensor([POSITIVE_MARK_TOKEN if c else NEGATIVE_MARK_TOKEN for c in cond], dtype=context.dtype)
    mark_tokens = marks.view(-1, 1, 1).expand(len(cond), 1, context.shape[2])
    return torch.cat([mark_tokens, context], dim=1)


def unmark_prompt_context(x: torch.Tensor):
    """hook.py ``unmark_prompt_context``: strip the mark token and tell cond rows from uncond rows
    (an unmarked context counts as all cond)."""
    t = x[..., 0, :]
    if float(torch.mean(torch.abs(torch.abs(t) - POSITIVE_MARK_TOKEN))) >= MARK_EPS:
        return torch.ones(size=(x.shape[0], 1, 1, 1), dtype=x.dtype), [], [], x
    mark = x[:, 0, :]
    context = x[:, 1:, :]
    mark = (torch.mean(torch.abs(mark - NEGATIVE_MARK_TOKEN), dim=1) > MARK_EPS).float()
    mark_batch = mark[:, None, None, None].to(x.dtype)
    uc_indices = [i for i, item in enumerate(mark.tolist()) if item < 0.5]
    c_indices = [i for i, item in enumerate(mark.tolist()) if not item < 0.5]
    return mark_batch, uc_indices, c_indices, context


# --- scripts/enums.py -------------------------------------------------------------------------


class ControlModelType(enum.Enum):
    ControlNet = "ControlNet, Lvmin Zhang"
    T2I_Adapter = "T2I_Adapter, Chong Mou"
    T2I_StyleAdapter = "T2I_StyleAdapter, Chong Mou"
    AttentionInjection = "AttentionInjection, Lvmin Zhang"
    ControlLoRA = "ControlLoRA, Wu Hecong"
    ReVision = "ReVision, Stability"
    IPAdapter = "IPAdapter, Hu Ye"
    Controlllite = "Controlllite, Kohya"
    InstantID = "InstantID, Qixun Wang"
    ControlNetUnion = "ControlNetUnion, xinsir6"

    @property
    def is_controlnet(self) -> bool:
        return self in (
            ControlModelType.ControlNet,
            ControlModelType.ControlLoRA,
            ControlModelType.InstantID,
            ControlModelType.ControlNetUnion,
        )


class AutoMachine(enum.Enum):
    Read = "Read"
    Write = "Write"
    StyleAlign = "StyleAlign"


class HiResFixOption(enum.Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


class ControlMode(enum.Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


# --- scripts/hook.py: ControlParams -----------------------------------------------------------


class ControlParams:
    """hook.py ``ControlParams``, with the fields the U-Net forward reads. ``controlnet.py``
    (``controlnet_main_entry``) builds one per enabled unit for every generation, with
    ``soft_injection = control_mode != BALANCED`` and ``cfg_injection = control_mode == CONTROL``;
    :func:`unit_params` does the same."""

    def __init__(
        self,
        control_model: Any,
        preprocessor: Dict[str, Any],
        hint_cond: torch.Tensor,
        weight: float,
        guidance_stopped: bool,
        start_guidance_percent: float,
        stop_guidance_percent: float,
        advanced_weighting: List[float] | None,
        control_model_type: ControlModelType,
        hr_hint_cond: torch.Tensor | None,
        global_average_pooling: bool,
        soft_injection: bool,
        cfg_injection: bool,
        hr_option: HiResFixOption = HiResFixOption.BOTH,
    ) -> None:
        self.control_model = control_model
        self.preprocessor = preprocessor
        self._hint_cond = hint_cond
        self.weight = weight
        self.guidance_stopped = guidance_stopped
        self.start_guidance_percent = start_guidance_percent
        self.stop_guidance_percent = stop_guidance_percent
        self.advanced_weighting = advanced_weighting
        self.control_model_type = control_model_type
        self.global_average_pooling = global_average_pooling
        self.hr_hint_cond = hr_hint_cond
        self.hr_option = hr_option
        self.used_hint_cond = None
        self.used_hint_cond_latent = None
        self.soft_injection = soft_injection
        self.cfg_injection = cfg_injection

    @property
    def hint_cond(self) -> torch.Tensor:
        return self._hint_cond

    def disabled_by_hr_option(self, is_in_high_res_fix: bool) -> bool:
        if self.hr_option == HiResFixOption.BOTH:
            return False
        if self.hr_option == HiResFixOption.LOW_RES_ONLY:
            return is_in_high_res_fix
        return not is_in_high_res_fix


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
    hr_option: HiResFixOption = HiResFixOption.BOTH,
    advanced_weighting: List[float] | None = None,
    threshold_a: float = 0.5,
) -> ControlParams:
    """One unit's params as ``controlnet_main_entry`` builds them from a ``ControlNetUnit``."""
    return ControlParams(
        control_model=control_model,
        preprocessor=dict(name=module, preprocessor_resolution=512, threshold_a=threshold_a, threshold_b=0.5),
        hint_cond=hint,
        weight=weight,
        guidance_stopped=False,
        start_guidance_percent=guidance_start,
        stop_guidance_percent=guidance_end,
        advanced_weighting=advanced_weighting,
        control_model_type=model_type,
        hr_hint_cond=hr_hint,
        global_average_pooling=False,
        soft_injection=control_mode != ControlMode.BALANCED,
        cfg_injection=control_mode == ControlMode.CONTROL,
        hr_option=hr_option,
    )


# --- scripts/cldm.py and scripts/adapter.py: control models -----------------------------------


def _encoder_shapes(unet: UNetModel) -> List[tuple]:
    """Channels and downscale factor of each skip feature (input blocks) and of the middle block."""
    with torch.no_grad():
        emb = unet.time_embed(timestep_embedding(torch.zeros(1), unet.model_channels))
        context = torch.zeros(1, 1, unet.input_blocks[1][1].transformer_blocks[0].attn2.to_k.in_features)
        h = torch.zeros(1, unet.in_channels, 8, 8)
        shapes = []
        for block in list(unet.input_blocks) + [unet.middle_block]:
            h = block(h, emb, context)
            shapes.append((h.shape[1], 8 // h.shape[2]))
    return shapes


def _seeded_conv(
    generator: torch.Generator, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int | None = None
) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if padding is None else padding)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / (c_in * kernel * kernel) ** 0.5)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
    return conv


class TinyControlNet(nn.Module):
    """Shaped like cldm.py ``ControlNet``: the hint, encoded from pixels to latent size, is added
    to the encoded ``x``, and one residual per skip feature plus one for the middle block comes out
    (13 for SD1.x), each with the rows of ``x`` and depending on the row's latent, timestep and
    text. The real one copies the U-Net's encoder; plain convolutions keep the tests fast."""

    def __init__(self, unet: UNetModel, seed: int = 0, hint_channels: int = 3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        shapes = _encoder_shapes(unet)
        self.model_channels = unet.model_channels
        context_dim = unet.input_blocks[1][1].transformer_blocks[0].attn2.to_k.in_features
        self.input_hint_block = nn.Sequential(
            _seeded_conv(generator, hint_channels, 16, 3),
            nn.SiLU(),
            _seeded_conv(generator, 16, 32, 3, stride=2),
            nn.SiLU(),
            _seeded_conv(generator, 32, 32, 3, stride=2),
            nn.SiLU(),
            _seeded_conv(generator, 32, unet.model_channels, 3, stride=2),
        )
        # Named as in cldm.py: hook.py reads ``input_blocks[0][0].in_channels`` for inpaint models.
        self.input_blocks = nn.ModuleList([nn.Sequential(_seeded_conv(generator, unet.in_channels, unet.model_channels, 3))])
        blocks, previous = [], (unet.model_channels, 1)
        for channels, scale in shapes:
            blocks.append(_seeded_conv(generator, previous[0], channels, 3, stride=scale // previous[1]))
            previous = (channels, scale)
        self.blocks = nn.ModuleList(blocks)
        self.time_proj = nn.Linear(unet.model_channels, sum(c for c, _ in shapes))
        self.text_proj = nn.Linear(context_dim, sum(c for c, _ in shapes))
        for linear in (self.time_proj, self.text_proj):
            with torch.no_grad():
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) / linear.in_features**0.5)
        self.zero_convs = nn.ModuleList(_seeded_conv(generator, c, c, 1) for c, _ in shapes)
        self.eval().requires_grad_(False)

    def forward(self, x, hint, timesteps, context, y=None, **kwargs) -> List[torch.Tensor]:
        t_emb = timestep_embedding(timesteps, self.model_channels, repeat_only=False)
        biases = (self.time_proj(t_emb) + self.text_proj(context.mean(dim=1))).split(
            [block.out_channels for block in self.blocks], dim=1
        )
        h = self.input_blocks[0](x) + self.input_hint_block(hint)  # one hint image broadcasts over every row
        outs = []
        for block, bias, zero_conv in zip(self.blocks, biases, self.zero_convs):
            h = F.silu(block(h) + bias[:, :, None, None])
            outs.append(zero_conv(h))
        return outs


class PlugableControlModel(nn.Module):
    """cldm.py ``PlugableControlModel``: what ``param.control_model`` holds for ControlNet units.
    ``Script.load_control_model`` hands the same object to every unit that uses the same model."""

    def __init__(self, control_model: nn.Module) -> None:
        super().__init__()
        self.control_model = control_model
        self.gpu_component = None
        self.is_control_lora = False

    def reset(self) -> None:
        pass

    def forward(self, *args, **kwargs):
        return self.control_model(*args, **kwargs)

    def aggressive_lowvram(self) -> None:
        self.to("cpu")

    def fullvram(self) -> None:
        self.to("cpu")  # devices.get_device_for("controlnet") in the real one


class TinyAdapter(nn.Module):
    """adapter.py ``Adapter``: features computed from the hint alone, one per T2I injection point
    (after input blocks 2, 5, 8 and 11 on SD1.x), with the rows of the hint, not of ``x``."""

    INJECTION_BLOCKS = (2, 5, 8, 11)

    def __init__(self, unet: UNetModel, seed: int = 1, hint_channels: int = 3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        shapes = _encoder_shapes(unet)
        self.stem = _seeded_conv(generator, hint_channels, unet.model_channels, 8, stride=8, padding=0)
        heads = []
        previous = (unet.model_channels, 1)
        for block in self.INJECTION_BLOCKS:
            channels, scale = shapes[block]
            heads.append(_seeded_conv(generator, previous[0], channels, 3, stride=scale // previous[1]))
            previous = (channels, scale)
        self.heads = nn.ModuleList(heads)
        self.eval().requires_grad_(False)

    def forward(self, hint: torch.Tensor) -> List[torch.Tensor]:
        h = self.stem(hint)
        features = []
        for head in self.heads:
            h = head(h)
            features.append(h)
        return features


class PlugableAdapter(nn.Module):
    """adapter.py ``PlugableAdapter``: computes the features on the first call and returns a deep
    copy of the cached ones on every later call until ``reset``."""

    def __init__(self, control_model: nn.Module) -> None:
        super().__init__()
        self.control_model = control_model
        self.control = None

    def reset(self) -> None:
        self.control = None

    def forward(self, hint=None, x=None, *args, **kwargs):
        if self.control is None:
            self.control = self.control_model(hint)
        return copy.deepcopy(self.control)

    def fullvram(self) -> None:
        self.to("cpu")


# --- scripts/hook.py: the U-Net hook ----------------------------------------------------------


def aligned_adding(base: torch.Tensor, x: Any, require_channel_alignment: bool) -> torch.Tensor:
    """hook.py ``aligned_adding``: add a residual (0.0 when no unit gave one) to a feature."""
    if isinstance(x, float):
        return base if x == 0.0 else base + x
    if require_channel_alignment:
        zeros = torch.zeros_like(base)
        zeros[:, : x.shape[1], ...] = x
        x = zeros
    base_h, base_w = base.shape[-2:]
    xh, xw = x.shape[-2:]
    if (xh > 1 or xw > 1) and (base_h != xh or base_w != xw):
        x = F.interpolate(x, size=(base_h, base_w), mode="nearest")
    return base + x


def torch_dfs(model: nn.Module) -> List[nn.Module]:
    """hook.py ``torch_dfs``."""
    result = [model]
    for child in model.children():
        result += torch_dfs(child)
    return result


class UnetHook(nn.Module):
    """hook.py ``UnetHook``. ``hook`` takes the U-Net, the units' params and the two batch
    options (``Script.ui_batch_option_state`` in controlnet.py); the real one also takes the
    loaded checkpoint and ``p`` for VAE encoding and ``p.sample`` marking, which tests replace
    with latents given directly and :func:`mark_rows`.

    Test instrumentation, not in the real hook: ``residual_log`` gets, for every U-Net call, the
    residuals each unit (by index in ``control_params``) added, after ControlNet's scaling."""

    def __init__(self) -> None:
        super().__init__()
        self.model = None
        self.control_params = None
        self.attention_auto_machine = AutoMachine.Read
        self.attention_auto_machine_weight = 1.0
        self.current_style_fidelity = 0.0
        self.current_uc_indices: List[int] = []
        self.current_c_indices: List[int] = []
        self.is_in_high_res_fix = False
        self.residual_log: List[Dict[int, List[torch.Tensor]]] = []

    def guidance_schedule_handler(self, x: Any) -> None:
        """hook.py: registered with ``on_cfg_denoiser``; ``x`` is the ``CFGDenoiserParams``."""
        if not self.control_params:
            return
        for param in self.control_params:
            current_sampling_percent = x.sampling_step / x.total_sampling_steps
            param.guidance_stopped = (
                current_sampling_percent < param.start_guidance_percent
                or current_sampling_percent > param.stop_guidance_percent
            )
            if self.model is not None:
                self.model.current_sampling_percent = current_sampling_percent

    def hook(
        self,
        model: UNetModel,
        control_params: List[ControlParams],
        batch_option_uint_separate: bool = False,
        batch_option_style_align: bool = False,
    ) -> None:
        self.model = model
        self.control_params = control_params
        outer = self

        def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
            # hook.py UnetHook.hook.forward, SD1.x path.
            total_t2i_adapter_embedding: List[Any] = [0.0] * 4
            total_controlnet_embedding: List[Any] = [0.0] * 13
            require_inpaint_hijack = False
            is_in_high_res_fix = False
            batch_size = int(x.shape[0])
            log: Dict[int, List[torch.Tensor]] = {}

            cond_mark, outer.current_uc_indices, outer.current_c_indices, context = unmark_prompt_context(context)
            outer.model.cond_mark = cond_mark

            # High-res fix: pick the hint whose size is nearer the current latent.
            for param in outer.control_params:
                if param.used_hint_cond is None:
                    param.used_hint_cond = param.hint_cond
                if isinstance(param.hr_hint_cond, torch.Tensor) and x.ndim == 4:
                    _, _, h_lr, w_lr = param.hint_cond.shape
                    _, _, h_hr, w_hr = param.hr_hint_cond.shape
                    h = x.shape[2] * 8
                    if abs(h - h_lr) < abs(h - h_hr):
                        is_in_high_res_fix = False
                        param.used_hint_cond = param.hint_cond
                    else:
                        is_in_high_res_fix = True
                        param.used_hint_cond = param.hr_hint_cond
            self.is_in_high_res_fix = is_in_high_res_fix
            outer.is_in_high_res_fix = is_in_high_res_fix

            # Reference units: the hint is the reference latent (VAE-encoded in the real one).
            for param in outer.control_params:
                if param.control_model_type == ControlModelType.AttentionInjection and param.used_hint_cond_latent is None:
                    latent = param.used_hint_cond
                    if latent.shape[0] != batch_size:
                        latent = torch.cat([latent.clone() for _ in range(batch_size)], dim=0)
                    param.used_hint_cond_latent = latent

            # vram: what the real hook asks of every control model before using it.
            for param in outer.control_params:
                if getattr(param.control_model, "disable_memory_management", False):
                    continue
                if param.control_model is not None and hasattr(param.control_model, "fullvram"):
                    param.control_model.fullvram()

            # ControlNet / T2I-Adapter residuals.
            for param_index, param in enumerate(outer.control_params):
                if param.guidance_stopped or param.disabled_by_hr_option(self.is_in_high_res_fix):
                    continue
                if not (param.control_model_type.is_controlnet or param.control_model_type == ControlModelType.T2I_Adapter):
                    continue
                x_in = x
                control_model = param.control_model.control_model
                if param.control_model_type.is_controlnet:
                    if x.shape[1] != control_model.input_blocks[0][0].in_channels and x.shape[1] == 9:
                        x_in = x[:, :4, ...]
                        require_inpaint_hijack = True
                hint = param.used_hint_cond
                control = param.control_model(
                    x=x_in, hint=hint, timesteps=timesteps, context=context, y=y, control_type=None
                )
                control_scales = [param.weight] * 13
                if param.cfg_injection or param.global_average_pooling:
                    if param.control_model_type == ControlModelType.T2I_Adapter:
                        control = [torch.cat([c.clone() for _ in range(batch_size)], dim=0) for c in control]
                    control = [c * cond_mark for c in control]
                high_res_fix_forced_soft_injection = False
                if is_in_high_res_fix:
                    if "canny" in param.preprocessor["name"] or "mlsd" in param.preprocessor["name"]:
                        high_res_fix_forced_soft_injection = True
                if param.soft_injection or high_res_fix_forced_soft_injection:
                    if param.control_model_type == ControlModelType.T2I_Adapter:
                        control_scales = [param.weight * s for s in (0.25, 0.62, 0.825, 1.0)]
                    elif param.control_model_type.is_controlnet:
                        control_scales = [param.weight * (0.825 ** float(12 - i)) for i in range(13)]
                if param.advanced_weighting is not None:
                    control_scales = param.advanced_weighting
                control = [c * scale for c, scale in zip(control, control_scales)]
                if param.global_average_pooling:
                    control = [torch.mean(c, dim=(2, 3), keepdim=True) for c in control]
                for idx, item in enumerate(control):
                    target = None
                    if param.control_model_type.is_controlnet:
                        target = total_controlnet_embedding
                    if param.control_model_type == ControlModelType.T2I_Adapter:
                        target = total_t2i_adapter_embedding
                    if target is not None:
                        if batch_option_uint_separate:
                            for pi, ci in enumerate(outer.current_c_indices):
                                if pi % len(outer.control_params) != param_index:
                                    item[ci] = 0
                            for pi, ci in enumerate(outer.current_uc_indices):
                                if pi % len(outer.control_params) != param_index:
                                    item[ci] = 0
                        target[idx] = item + target[idx]
                log[param_index] = control
            outer.residual_log.append(log)

            # Attention cache cleared, then the reference pass writes it.
            for module in outer.attn_module_list:
                module.bank = []
                module.style_cfgs = []
            for param in outer.control_params:
                if param.guidance_stopped or param.disabled_by_hr_option(self.is_in_high_res_fix):
                    continue
                if param.used_hint_cond_latent is None or param.control_model_type != ControlModelType.AttentionInjection:
                    continue
                ref_xt = param.used_hint_cond_latent * 0.7  # predict_q_sample(...) adds random noise in the real one
                outer.current_style_fidelity = max(0.0, min(1.0, float(param.preprocessor["threshold_a"])))
                if param.cfg_injection:
                    outer.current_style_fidelity = 1.0
                elif param.soft_injection or is_in_high_res_fix:
                    outer.current_style_fidelity = 0.0
                if param.preprocessor["name"] in ["reference_only", "reference_adain+attn"]:
                    outer.attention_auto_machine = AutoMachine.Write
                    outer.attention_auto_machine_weight = param.weight
                outer.original_forward(x=ref_xt, timesteps=timesteps, context=context)
                outer.attention_auto_machine = AutoMachine.Read

            # U-Net encoder, middle and decoder with the residuals added.
            hs = []
            with torch.no_grad():
                emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False))
                h = x
                for i, module in enumerate(self.input_blocks):
                    self.current_h_shape = (h.shape[0], h.shape[1], h.shape[2], h.shape[3])
                    h = module(h, emb, context)
                    if i in (2, 5, 8, 11):
                        h = aligned_adding(h, total_t2i_adapter_embedding.pop(0), require_inpaint_hijack)
                    hs.append(h)
                self.current_h_shape = (h.shape[0], h.shape[1], h.shape[2], h.shape[3])
                h = self.middle_block(h, emb, context)
            h = aligned_adding(h, total_controlnet_embedding.pop(), require_inpaint_hijack)
            for module in self.output_blocks:
                self.current_h_shape = (h.shape[0], h.shape[1], h.shape[2], h.shape[3])
                h = torch.cat([h, aligned_adding(hs.pop(), total_controlnet_embedding.pop(), require_inpaint_hijack)], dim=1)
                h = module(h, emb, context)
            h = h.type(x.dtype)
            return self.out(h)

        def forward_webui(*args, **kwargs):
            return forward(*args, **kwargs)

        def hacked_basic_transformer_inner_forward(self, x, context=None):
            # hook.py, the same name: self-attention with the reference bank or StyleAlign.
            x_norm1 = self.norm1(x)
            self_attn1 = None
            if self.disable_self_attn:
                self_attn1 = self.attn1(x_norm1, context=context)
            else:
                self_attention_context = x_norm1
                if outer.attention_auto_machine == AutoMachine.Write:
                    if outer.attention_auto_machine_weight > self.attn_weight:
                        self.bank.append(self_attention_context.detach().clone())
                        self.style_cfgs.append(outer.current_style_fidelity)
                if outer.attention_auto_machine == AutoMachine.Read:
                    if len(self.bank) > 0:
                        style_cfg = sum(self.style_cfgs) / float(len(self.style_cfgs))
                        self_attn1_uc = self.attn1(x_norm1, context=torch.cat([self_attention_context] + self.bank, dim=1))
                        self_attn1_c = self_attn1_uc.clone()
                        if len(outer.current_uc_indices) > 0 and style_cfg > 1e-5:
                            self_attn1_c[outer.current_uc_indices] = self.attn1(
                                x_norm1[outer.current_uc_indices], context=self_attention_context[outer.current_uc_indices]
                            )
                        self_attn1 = style_cfg * self_attn1_c + (1.0 - style_cfg) * self_attn1_uc
                    self.bank = []
                    self.style_cfgs = []
                if outer.attention_auto_machine == AutoMachine.StyleAlign and not outer.is_in_high_res_fix:

                    def shared_attn1(inner_x):
                        BB, FF, CC = inner_x.shape
                        return self.attn1(inner_x.reshape(1, BB * FF, CC)).reshape(BB, FF, CC)

                    uc_layer = shared_attn1(x_norm1[outer.current_uc_indices])
                    c_layer = shared_attn1(x_norm1[outer.current_c_indices])
                    self_attn1 = torch.zeros_like(x_norm1).to(uc_layer)
                    self_attn1[outer.current_uc_indices] = uc_layer
                    self_attn1[outer.current_c_indices] = c_layer
                if self_attn1 is None:
                    self_attn1 = self.attn1(x_norm1, context=self_attention_context)
            x = self_attn1.to(x.dtype) + x
            x = self.attn2(self.norm2(x), context=context) + x
            x = self.ff(self.norm3(x)) + x
            return x

        model._original_forward = model.forward
        outer.original_forward = model.forward
        model.forward = forward_webui.__get__(model, UNetModel)

        need_attention_hijack = any(
            param.control_model_type == ControlModelType.AttentionInjection for param in outer.control_params
        )
        if batch_option_style_align:
            need_attention_hijack = True
            outer.attention_auto_machine = AutoMachine.StyleAlign

        all_modules = torch_dfs(model)
        if need_attention_hijack:
            attn_modules = [module for module in all_modules if isinstance(module, BasicTransformerBlock)]
            attn_modules = sorted(attn_modules, key=lambda m: -m.norm1.normalized_shape[0])
            for i, module in enumerate(attn_modules):
                if getattr(module, "_original_inner_forward_cn_hijack", None) is None:
                    module._original_inner_forward_cn_hijack = module._forward
                module._forward = hacked_basic_transformer_inner_forward.__get__(module, BasicTransformerBlock)
                module.bank = []
                module.style_cfgs = []
                module.attn_weight = float(i) / float(len(attn_modules))
            outer.attn_module_list = attn_modules
        else:
            for module in all_modules:
                original = getattr(module, "_original_inner_forward_cn_hijack", None)
                if original is not None:
                    module._forward = original
            outer.attn_module_list = []

    def restore(self) -> None:
        """hook.py ``UnetHook.restore``: note that it assigns the stashed bound ``forward`` back as
        an instance attribute rather than deleting the attribute, and leaves the transformer blocks'
        ``_forward`` to the next ``hook`` or :func:`clear_all_secondary_control_models`."""
        self.control_params = None
        if self.model is not None:
            if hasattr(self.model, "_original_forward"):
                self.model.forward = self.model._original_forward
                del self.model._original_forward


def clear_all_secondary_control_models(unet: nn.Module) -> None:
    """controlnet.py: run at the start of every ControlNet run and in ``Script.postprocess``;
    puts the stashed ``_forward`` back on every hijacked transformer block."""
    for module in torch_dfs(unet):
        original = getattr(module, "_original_inner_forward_cn_hijack", None)
        if original is not None:
            module._forward = original


# Attributes the real forward and guidance handler set on the U-Net at every call and never remove.
PER_CALL_ATTRIBUTES = frozenset({"cond_mark", "current_h_shape", "is_in_high_res_fix", "current_sampling_percent"})
