"""Stand-in for the WebUI's modules/sd_models.py (with the config guess of modules/sd_models_config.py):
the checkpoint list, loading and switching checkpoints, the loaded-model bookkeeping, token merging and
the noise-schedule overrides.

Checkpoint "files" are registered by the harness (``register_checkpoint``) instead of being found in
models/Stable-diffusion: a ``StandInCheckpointFile`` holds a tiny U-Net's weights and a config name.
Loading keeps the real host's rules: a checkpoint whose config is the loaded model's gets its weights
copied into the loaded modules (same objects); another config means a new model, ``on_model_loaded``,
and the old model sent to the trash (its tensors moved to the meta device) unless
``sd_checkpoints_limit`` keeps it loaded. The first model built from a file uses the very U-Net object
registered; later ones are new objects with the file's weights.

Left out: reading, hashing and caching files (the hash is of the weights), fp8 and half precision, VAE
files, textual inversion, lowvram; the config is guessed from the U-Net's text-context width and
parameter shapes instead of from state-dict keys.
"""

from __future__ import annotations

import copy
import hashlib
import re

import tomesd
import torch

from modules import errors, script_callbacks, sd_unet, shared

checkpoints_list: dict = {}
"""title -> CheckpointInfo, in listing order."""
checkpoint_aliases: dict = {}
"""every name a checkpoint answers to -> CheckpointInfo."""

_CONFIG_BY_CONTEXT_WIDTH = {
    768: "v1-inference.yaml",
    1024: "v2-inference.yaml",
    2048: "sd_xl_base.yaml",
    1280: "sd_xl_refiner.yaml",
}
_TOME_OPTIONS = {"use_rand": False, "merge_attn": True, "merge_crossattn": False, "merge_mlp": False}


def _architecture_config(unet) -> str:
    """Stands in for sd_models_config.guess_model_config_from_state_dict: the architecture's config
    file, told apart further by the parameter shapes (so weights are only ever copied between equal shapes)."""
    from standin_model import text_context_width

    shapes = repr([(name, tuple(tensor.shape)) for name, tensor in unet.state_dict().items()])
    architecture = _CONFIG_BY_CONTEXT_WIDTH.get(text_context_width(unet), "unknown.yaml")
    return f"{architecture}#{hashlib.sha256(shapes.encode()).hexdigest()[:8]}"


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device.type != "meta" and b.device.type != "meta" and a.data_ptr() == b.data_ptr()


class StandInCheckpointFile:
    """What a checkpoint file holds: U-Net weights and a config (``config`` given: a .yaml beside the
    checkpoint, as the real host supports; else the architecture's).

    The weights start as views of the registered U-Net's tensors and become a private copy before
    anything writes into tensors they share (copy on write, see ``unshare``). The registered U-Net is
    handed out by the first build; to build new ones later, its module structure is copied (without
    hooks or tensor data) while it is still untouched by the host: at that first build if other
    checkpoints are listed, else when a second checkpoint is registered."""

    def __init__(self, unet, config: str | None = None):
        self.source = unet
        self.weights = {name: tensor.detach() for name, tensor in unet.state_dict().items()}
        self.config = config or _architecture_config(unet)
        self.blueprint = None
        self.handed_out = False

    def keep_blueprint(self) -> None:
        from standin_model import stripped_copy

        if self.blueprint is None:
            self.blueprint = stripped_copy(self.source, with_weights=False)

    def build_unet(self):
        if not self.handed_out:
            if len(checkpoints_list) > 1:
                self.keep_blueprint()
            self.handed_out = True
            return self.source
        unet = copy.deepcopy(self.blueprint)
        unet.load_state_dict({name: tensor.clone() for name, tensor in self.weights.items()}, assign=True)
        return unet

    def unshare(self, unet) -> None:
        """Take a private copy of the weights if they share tensors with ``unet``, about to be overwritten."""
        in_use = {tensor.data_ptr() for tensor in unet.state_dict().values() if tensor.device.type != "meta"}
        if any(tensor.device.type != "meta" and tensor.data_ptr() in in_use for tensor in self.weights.values()):
            self.weights = {name: tensor.clone() for name, tensor in self.weights.items()}

    def state_dict(self) -> dict:
        return {f"model.diffusion_model.{name}": tensor for name, tensor in self.weights.items()}

    def restore_source(self) -> None:
        """Harness teardown: the registered U-Net gets the file's weights back if it was trashed or had
        other weights loaded into it, and loses a token-merging patch left by a model trashed mid-run."""
        current = self.source.state_dict()
        if not all(_same_storage(tensor, self.weights[name]) for name, tensor in current.items()):
            self.source.load_state_dict(self.weights, assign=True)
        tomesd.remove_patch(self.source)


def _weights_sha256(weights: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CheckpointInfo:
    """Mirrors sd_models.CheckpointInfo for a checkpoint named ``name`` ("name.safetensors"): the hashes
    (sha256 of the weights; ``shorthash`` its first 10 digits), the UI's ``title`` "name.safetensors
    [shorthash]", the infotexts' ``short_title`` "name [shorthash]", and the aliases it is found by."""

    def __init__(self, name: str, standin_file: StandInCheckpointFile):
        self.standin_file = standin_file
        self.name_for_extra = self.model_name = name
        self.filename = self.name = f"{name}.safetensors"
        self.sha256 = _weights_sha256(standin_file.weights)
        self.hash = self.sha256[:8]
        self.shorthash = self.sha256[:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        names, hashes = (self.name, self.name_for_extra), (self.hash, self.shorthash)
        self.ids = [*hashes, self.sha256, *names, *(f"{name} [{digest}]" for name in names for digest in hashes)]

    def register(self) -> None:
        checkpoints_list[self.title] = self
        checkpoint_aliases.update(dict.fromkeys(self.ids, self))


def register_checkpoint(unet, name: str, *, config: str | None = None) -> CheckpointInfo:
    """Stands in for a checkpoint file appearing in models/Stable-diffusion (list_models): ``unet``'s
    weights become the file's content."""
    for info in checkpoints_list.values():
        if info.standin_file.handed_out:
            info.standin_file.keep_blueprint()
    info = CheckpointInfo(name, StandInCheckpointFile(unet, config))
    info.register()
    return info


def checkpoint_tiles(use_short=False):
    """Mirrors sd_models.checkpoint_tiles: the checkpoint dropdown's choices."""
    return [info.short_title if use_short else info.title for info in checkpoints_list.values()]


_CHECKSUM_SUFFIX = re.compile(r"\s*\[[^]]+]\s*$")


def get_closet_checkpoint_match(search_string):
    """Mirrors sd_models.get_closet_checkpoint_match: an exact alias, else the shortest title containing
    the text, else the shortest title containing it without a trailing "[hash]"."""
    if not search_string:
        return None
    if search_string in checkpoint_aliases:
        return checkpoint_aliases[search_string]
    for wanted in (search_string, _CHECKSUM_SUFFIX.sub("", search_string)):
        found = [info for info in checkpoints_list.values() if wanted in info.title]
        if found:
            return min(found, key=lambda info: len(info.title))
    return None


def select_checkpoint():
    """Mirrors sd_models.select_checkpoint: the configured checkpoint, else the first one listed."""
    configured = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    if configured is not None:
        return configured
    if not checkpoints_list:
        raise FileNotFoundError("No checkpoints found. Can't run without a checkpoint.")
    return next(iter(checkpoints_list.values()))


class SkipWritingToConfig:
    """Mirrors sd_models.SkipWritingToConfig: loads inside it leave opts.sd_model_checkpoint alone (the
    refiner and the hires checkpoint are loaded this way)."""

    skip = False

    def __enter__(self):
        self.was, SkipWritingToConfig.skip = SkipWritingToConfig.skip, True
        return self

    def __exit__(self, *exc_info):
        SkipWritingToConfig.skip = self.was


class SdModelData:
    """Mirrors sd_models.SdModelData: the current model and every loaded one, most recent first."""

    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False

    def get_sd_model(self):
        """The current model; the first access loads the configured checkpoint, if one is listed (the real
        one reports a failure and returns None, as here)."""
        if self.sd_model is None and not self.was_loaded_at_least_once and checkpoints_list:
            try:
                load_model()
            except Exception as e:
                errors.display(e, "loading stable diffusion model", full_traceback=True)
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        """``v`` becomes current and moves to the front of the loaded models (what assigning shared.sd_model does)."""
        self.sd_model = v
        if v in self.loaded_sd_models:
            self.loaded_sd_models.remove(v)
        if v is not None:
            self.loaded_sd_models.insert(0, v)

    def reset(self):
        """Stand-in only (harness teardown): nothing loaded."""
        self.__init__()


model_data = SdModelData()


def _send_to_trash(model) -> None:
    # sd_models.send_model_to_trash: the tensors go to the meta device, their memory is released
    model.to(device="meta")


def _load_weights(model, info: CheckpointInfo) -> None:
    """Mirrors sd_models.load_model_weights: records the checkpoint in the settings (unless skipped),
    copies the file's weights into the model, reapplies the schedule override, sets the checkpoint fields."""
    if not SkipWritingToConfig.skip:
        shared.opts.data["sd_model_checkpoint"] = info.title
    for other in checkpoints_list.values():
        if other is not info:
            other.standin_file.unshare(model.model.diffusion_model)
    model.load_state_dict(info.standin_file.state_dict(), strict=False)
    apply_alpha_schedule_override(model)
    model.sd_model_hash = info.shorthash
    model.sd_model_checkpoint = info.filename
    model.sd_checkpoint_info = info


def load_model(checkpoint_info=None):
    """Mirrors sd_models.load_model: trashes the current model, builds a new one from the checkpoint's
    config and weights, hijacks it (attention optimisation), makes it current, fires ``on_model_loaded``,
    then encodes the empty prompt (used to pad conds)."""
    from standin_model import StandInModel

    from modules import sd_hijack

    info = checkpoint_info or select_checkpoint()
    if model_data.sd_model is not None:
        _send_to_trash(model_data.sd_model)
        model_data.sd_model = None

    model = StandInModel(info.standin_file.build_unet())
    model.used_config = info.standin_file.config
    _load_weights(model, info)
    sd_hijack.model_hijack.hijack(model)
    model.eval()
    model_data.set_sd_model(model)
    model_data.was_loaded_at_least_once = True
    script_callbacks.model_loaded_callback(model)

    with torch.no_grad():
        empty = model.get_learned_conditioning([""])
        model.cond_stage_model_empty_prompt = empty["crossattn"] if isinstance(empty, dict) else empty
    return model


def _reuse_loaded_model(sd_model, info: CheckpointInfo):
    """Mirrors sd_models.reuse_model_from_already_loaded. Models over ``sd_checkpoints_limit`` are trashed
    on the way. Returns: a loaded model of that checkpoint, made current; or a new model loaded beside the
    others while under the limit; or the oldest loaded model, made current for the caller to reuse; or None."""
    if sd_model is not None and sd_model.sd_checkpoint_info.filename == info.filename:
        return sd_model
    loaded = model_data.loaded_sd_models
    limit = shared.opts.sd_checkpoints_limit
    match = None
    for model in reversed(list(loaded)):
        if model.sd_checkpoint_info.filename == info.filename:
            match = model
        elif len(loaded) > limit > 0:
            loaded.remove(model)
            _send_to_trash(model)

    if match is not None:
        model_data.set_sd_model(match, already_loaded=True)
        if not SkipWritingToConfig.skip:
            shared.opts.data["sd_model_checkpoint"] = info.title
        return match
    if limit > 1 and len(loaded) < limit:
        model_data.sd_model = None
        return load_model(info)
    if loaded:
        model_data.sd_model = loaded.pop()
        return model_data.sd_model
    return None


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """Mirrors sd_models.reload_model_weights: nothing to do if the checkpoint is loaded; else an already
    loaded model of it, or a model to load it into (see ``_reuse_loaded_model``). Loading into a model
    switches the SD Unet off and undoes the hijack first; a different config then builds a new model
    (``load_model``, the old one trashed, the SD Unet left off until the next generation), the same config
    gets the weights copied in, then hijack, ``on_model_loaded`` and ``sd_unet.apply_unet()``."""
    from modules import sd_hijack

    info = info or select_checkpoint()
    model = sd_model or model_data.sd_model
    if model is not None and model.sd_model_checkpoint == info.filename and not forced_reload:
        return model

    model = _reuse_loaded_model(model, info)
    if model is not None and model.sd_checkpoint_info.filename == info.filename and not forced_reload:
        return model

    if model is not None:
        sd_unet.apply_unet("None")
        sd_hijack.model_hijack.undo_hijack(model)
    if model is None or info.standin_file.config != model.used_config:
        if model is not None:
            _send_to_trash(model)
        return load_model(info)

    try:
        _load_weights(model, info)
    finally:
        sd_hijack.model_hijack.hijack(model)
        script_callbacks.model_loaded_callback(model)
    model_data.set_sd_model(model)
    sd_unet.apply_unet()
    return model


def apply_token_merging(sd_model, token_merging_ratio):
    """Mirrors sd_models.apply_token_merging: tomesd's patch at that ratio (self-attention tokens merged,
    deterministic), replacing any other ratio; 0 removes it."""
    if getattr(sd_model, "applied_token_merged_ratio", 0) == token_merging_ratio:
        return
    tomesd.remove_patch(sd_model)  # a no-op without a patch
    if token_merging_ratio > 0:
        tomesd.apply_patch(sd_model, ratio=token_merging_ratio, **_TOME_OPTIONS)
    sd_model.applied_token_merged_ratio = token_merging_ratio


def _zero_terminal_snr(alphas_cumprod):
    # sd_models.rescale_zero_terminal_snr_abar: sqrt(alpha_bar) shifted and scaled so that the first value
    # stays and the last becomes zero (then a tiny positive alpha_bar, as the real one sets)
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    rescaled = ((root - last) * (first / (first - last))) ** 2
    rescaled[-1] = 4.8973451890853435e-08
    return rescaled


def apply_alpha_schedule_override(sd_model, p=None):
    """Mirrors sd_models.apply_alpha_schedule_override: alphas_cumprod from the model's original schedule,
    downcast to fp16 and/or rescaled to zero terminal SNR as the settings say (noted in p's infotext)."""
    if not hasattr(sd_model, "alphas_cumprod_original"):
        return
    alphas = sd_model.alphas_cumprod_original
    notes = {}
    if shared.opts.use_downcasted_alpha_bar:
        notes["Downcast alphas_cumprod"] = True
        alphas = alphas.half()
    if shared.opts.sd_noise_schedule == "Zero Terminal SNR":
        notes["Noise Schedule"] = shared.opts.sd_noise_schedule
        alphas = _zero_terminal_snr(alphas)
    sd_model.alphas_cumprod = alphas.to(shared.device)
    if p is not None:
        p.extra_generation_params.update(notes)
