"""Mirrors modules/sd_models.py: the checkpoint registry, the loaded-model bookkeeping (model_data),
load_model / reload_model_weights / reuse_model_from_already_loaded with their unload paths, token
merging (tomesd) and the alpha-schedule overrides.

A checkpoint "file" is a ``StandInCheckpointFile`` registered by the harness (``register_checkpoint``):
it holds the weights of a tiny U-Net and a config name. As in the real host, a checkpoint whose
config equals the loaded model's ``used_config`` is loaded by copying its weights into the loaded
modules (same objects); any other config builds a new model (new module objects) and sends the old
one to the "trash" (``m.to(device="meta")``: its tensors are gone) unless ``sd_checkpoints_limit``
keeps it in ``model_data.loaded_sd_models``.

Simplified: no files, hashing, fp8, half precision, VAE files, textual inversion or checkpoint cache
(``sd_checkpoint_cache``); the config is guessed from the U-Net's text-context width (plus a shape
signature) instead of from state-dict keys; the first model built from a file is the very U-Net object
the harness registered (later builds are new objects with the file's weights)."""

from __future__ import annotations

import copy
import hashlib
import re
import threading

import tomesd
import torch

from modules import devices, errors, script_callbacks, sd_unet, sd_vae, shared
from modules.shared import opts
from modules.timer import Timer

checkpoints_list = {}
checkpoint_aliases = {}
re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")

# mirrors sd_models_config: the config files the real host picks by architecture
_CONFIG_BY_CONTEXT_DIM = {
    768: "v1-inference.yaml",
    1024: "v2-inference.yaml",
    2048: "sd_xl_base.yaml",
    1280: "sd_xl_refiner.yaml",
}


def unet_sha256(unet):
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def guess_config(unet):
    # stands in for sd_models_config.guess_model_config_from_state_dict: one config per architecture
    from standin_model import unet_context_dim

    signature = hashlib.sha256(repr([(k, tuple(v.shape)) for k, v in unet.state_dict().items()]).encode()).hexdigest()[:8]
    return f"{_CONFIG_BY_CONTEXT_DIM.get(unet_context_dim(unet), 'unknown.yaml')} [{signature}]"


class StandInCheckpointFile:
    """What a checkpoint file on disk holds: the U-Net's weights and the model config (``config`` given =
    a config file beside the checkpoint, which the real host also supports; else the architecture's).

    The weights are references to the tensors of the U-Net registered (no copy): before another
    checkpoint's weights are copied into a model that uses them, the file takes a private copy
    (load_model_weights). The registered U-Net object itself is what the first build hands out. Its
    module structure (without tensor data) is copied while it is still pristine, so later builds are new,
    pristine objects: when it is handed out if other checkpoints are listed, else when the second
    checkpoint is registered (nothing can have replaced the model before that)."""

    def __init__(self, unet, config=None):
        self.source = unet
        self.handed_out = False
        self.weights = {k: v.detach() for k, v in unet.state_dict().items()}
        self.config = config or guess_config(unet)
        self.skeleton = None

    def take_private_weights(self):
        self.weights = {k: v.clone() for k, v in self.weights.items()}

    def shares_tensors_with(self, unet):
        file_ptrs = {v.data_ptr() for v in self.weights.values() if v.device.type != "meta"}
        return any(t.device.type != "meta" and t.data_ptr() in file_ptrs for t in unet.state_dict().values())

    def snapshot_structure(self):
        # the source's module structure with meta tensors; hooks and per-instance forward overrides dropped
        if self.skeleton is not None:
            return
        memo = {}
        for module in self.source.modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if tensor is not None and id(tensor) not in memo:
                    meta = torch.empty_like(tensor, device="meta")
                    if isinstance(tensor, torch.nn.Parameter):
                        meta = torch.nn.Parameter(meta, requires_grad=tensor.requires_grad)
                    memo[id(tensor)] = meta
        skeleton = copy.deepcopy(self.source, memo)
        for module in skeleton.modules():
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
                getattr(module, attr).clear()
            for attr in ("forward", "_forward"):
                module.__dict__.pop(attr, None)
        self.skeleton = skeleton

    def restore_source(self):
        # stand-in only (harness teardown): the registered U-Net object gets the file's weights back if it
        # was trashed or had another checkpoint's weights loaded into it, so a test can use it again
        tensors = self.source.state_dict()
        if any(t.device.type == "meta" or t.data_ptr() != self.weights[k].data_ptr() for k, t in tensors.items()):
            self.source.load_state_dict(self.weights, assign=True)
        tomesd.remove_patch(self.source)  # a model trashed during a generation may still have tomesd's patch

    def state_dict(self):
        return {"model.diffusion_model." + k: v for k, v in self.weights.items()}

    def build_unet(self):
        if not self.handed_out:
            if len(checkpoints_list) > 1:
                self.snapshot_structure()
            self.handed_out = True
            return self.source
        unet = copy.deepcopy(self.skeleton)
        unet.load_state_dict({k: v.clone() for k, v in self.weights.items()}, assign=True)
        return unet


class CheckpointInfo:
    # mirrors sd_models.CheckpointInfo, built from a name and a stand-in file instead of a path
    def __init__(self, name, standin_file: StandInCheckpointFile = None, sha256=None):
        self.standin_file = standin_file
        self.filename = name + ".safetensors"
        self.is_safetensors = True
        self.metadata = {}
        self.name = self.filename
        self.name_for_extra = name
        self.model_name = name
        self.sha256 = sha256 or unet_sha256(standin_file.source)
        self.hash = self.sha256[0:8]
        self.shorthash = self.sha256[0:10]
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [
            self.hash,
            self.model_name,
            self.title,
            self.name,
            self.name_for_extra,
            f"{self.name} [{self.hash}]",
            self.shorthash,
            self.sha256,
            f"{self.name} [{self.shorthash}]",
            f"{self.name_for_extra} [{self.shorthash}]",
        ]

    def register(self):
        checkpoints_list[self.title] = self
        for id_ in self.ids:
            checkpoint_aliases[id_] = self

    def calculate_shorthash(self):
        return self.shorthash


def register_checkpoint(unet, name, *, config=None) -> CheckpointInfo:
    """Stand-in for a checkpoint file appearing in models/Stable-diffusion (list_models): ``unet``'s
    weights become the file's content. A file whose U-Net is in use keeps a copy of its structure from now
    on (it may have to be rebuilt once another checkpoint has been loaded)."""
    for info in checkpoints_list.values():
        if info.standin_file.handed_out:
            info.standin_file.snapshot_structure()
    info = CheckpointInfo(name, StandInCheckpointFile(unet, config))
    info.register()
    return info


class SkipWritingToConfig:
    # mirrors sd_models.SkipWritingToConfig: load_model_weights does not write sd_model_checkpoint
    skip = False
    previous = None

    def __enter__(self):
        self.previous = SkipWritingToConfig.skip
        SkipWritingToConfig.skip = True
        return self

    def __exit__(self, exc_type, exc_value, exc_traceback):
        SkipWritingToConfig.skip = self.previous


def checkpoint_tiles(use_short=False):
    return [x.short_title if use_short else x.title for x in checkpoints_list.values()]


def list_models():
    pass  # the harness registers checkpoints (register_checkpoint)


def get_closet_checkpoint_match(search_string):
    # mirrors sd_models.get_closet_checkpoint_match
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string, None)
    if info is not None:
        return info
    found = sorted([info for info in checkpoints_list.values() if search_string in info.title], key=lambda x: len(x.title))
    if found:
        return found[0]
    stripped = re.sub(re_strip_checksum, "", search_string)
    found = sorted([info for info in checkpoints_list.values() if stripped in info.title], key=lambda x: len(x.title))
    return found[0] if found else None


def select_checkpoint():
    # mirrors sd_models.select_checkpoint: the configured checkpoint, else the first one listed
    model_checkpoint = shared.opts.sd_model_checkpoint
    checkpoint_info = checkpoint_aliases.get(model_checkpoint, None)
    if checkpoint_info is not None:
        return checkpoint_info
    if len(checkpoints_list) == 0:
        raise FileNotFoundError("No checkpoints found. Can't run without a checkpoint.")
    checkpoint_info = next(iter(checkpoints_list.values()))
    if model_checkpoint is not None:
        print(f"Checkpoint {model_checkpoint} not found; loading fallback {checkpoint_info.title}")
    return checkpoint_info


def get_checkpoint_state_dict(checkpoint_info: CheckpointInfo, timer):
    # mirrors sd_models.get_checkpoint_state_dict (read_state_dict of the file; no checkpoint cache)
    timer.record("load weights from disk")
    return checkpoint_info.standin_file.state_dict()


def find_checkpoint_config(state_dict, info):
    # mirrors sd_models_config.find_checkpoint_config: a config beside the checkpoint, else the guessed one
    return info.standin_file.config


class SdModelData:
    # mirrors sd_models.SdModelData: the current model and the list of loaded ones (most recent first)
    def __init__(self):
        self.sd_model = None
        self.loaded_sd_models = []
        self.was_loaded_at_least_once = False
        self.lock = threading.Lock()

    def get_sd_model(self):
        # the real one loads the configured checkpoint on first access; the stand-in does the same once a
        # checkpoint is registered (none registered: None instead of the real "No checkpoints found" error)
        if self.was_loaded_at_least_once:
            return self.sd_model
        if self.sd_model is None and checkpoints_list:
            with self.lock:
                if self.sd_model is not None or self.was_loaded_at_least_once:
                    return self.sd_model
                try:
                    load_model()
                except Exception as e:
                    errors.display(e, "loading stable diffusion model", full_traceback=True)
                    self.sd_model = None
        return self.sd_model

    def set_sd_model(self, v, already_loaded=False):
        self.sd_model = v
        try:
            self.loaded_sd_models.remove(v)
        except ValueError:
            pass
        if v is not None:
            self.loaded_sd_models.insert(0, v)

    def reset(self):  # stand-in only (harness teardown)
        self.__init__()


model_data = SdModelData()


def send_model_to_cpu(m):
    # mirrors sd_models.send_model_to_cpu (a no-op move on the CPU-only stand-in)
    if m is not None:
        m.to(devices.cpu)
    devices.torch_gc()


def send_model_to_device(m):
    # mirrors sd_models.send_model_to_device (lowvram.apply sets m.lowvram; never lowvram here)
    m.lowvram = False
    m.to(shared.device)


def send_model_to_trash(m):
    # mirrors sd_models.send_model_to_trash: the model's tensors go to the meta device (data released)
    m.to(device="meta")
    devices.torch_gc()


def get_empty_cond(sd_model):
    # mirrors sd_models.get_empty_cond: the encoding of "" ("crossattn" of a dict cond)
    d = sd_model.get_learned_conditioning([""])
    if isinstance(d, dict):
        d = d["crossattn"]
    return d


def load_model_weights(model, checkpoint_info: CheckpointInfo, state_dict, timer):
    # mirrors sd_models.load_model_weights: writes sd_model_checkpoint (unless SkipWritingToConfig), loads
    # the state dict into the model (strict=False), alpha-schedule override, checkpoint fields
    if not SkipWritingToConfig.skip:
        shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title

    if state_dict is None:
        state_dict = get_checkpoint_state_dict(checkpoint_info, timer)

    for info in checkpoints_list.values():  # stand-in: keep every other file's content intact
        if info is not checkpoint_info and info.standin_file.shares_tensors_with(model.model.diffusion_model):
            info.standin_file.take_private_weights()
    model.load_state_dict(state_dict, strict=False)
    timer.record("apply weights to model")

    apply_alpha_schedule_override(model)

    model.sd_model_hash = checkpoint_info.calculate_shorthash()
    model.sd_model_checkpoint = checkpoint_info.filename
    model.sd_checkpoint_info = checkpoint_info
    shared.opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    # mirrors sd_models.load_model: trash the current model, build a new one from the checkpoint's config,
    # load its weights, hijack, set it current, on_model_loaded callbacks, then the empty-prompt cond
    from standin_model import StandInSDModel

    from modules import sd_hijack

    checkpoint_info = checkpoint_info or select_checkpoint()
    timer = Timer()

    if model_data.sd_model:
        send_model_to_trash(model_data.sd_model)
        model_data.sd_model = None
        devices.torch_gc()

    if already_loaded_state_dict is not None:
        state_dict = already_loaded_state_dict
    else:
        state_dict = get_checkpoint_state_dict(checkpoint_info, timer)

    checkpoint_config = find_checkpoint_config(state_dict, checkpoint_info)
    sd_model = StandInSDModel(checkpoint_info.standin_file.build_unet())  # instantiate_from_config
    sd_model.used_config = checkpoint_config

    load_model_weights(sd_model, checkpoint_info, state_dict, timer)
    send_model_to_device(sd_model)
    sd_hijack.model_hijack.hijack(sd_model)
    sd_model.eval()
    model_data.set_sd_model(sd_model)
    model_data.was_loaded_at_least_once = True
    sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)

    script_callbacks.model_loaded_callback(sd_model)

    with devices.autocast(), torch.no_grad():
        sd_model.cond_stage_model_empty_prompt = get_empty_cond(sd_model)

    return sd_model


def reuse_model_from_already_loaded(sd_model, checkpoint_info, timer):
    # mirrors sd_models.reuse_model_from_already_loaded: an already loaded model of that checkpoint is made
    # current; else, below sd_checkpoints_limit, a new model is loaded beside the others; else the most
    # recently loaded one is popped to be reused (its weights replaced or the model rebuilt by the caller)
    if sd_model is not None and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model

    if shared.opts.sd_checkpoints_keep_in_cpu:
        send_model_to_cpu(sd_model)

    already_loaded = None
    for i in reversed(range(len(model_data.loaded_sd_models))):
        loaded_model = model_data.loaded_sd_models[i]
        if loaded_model.sd_checkpoint_info.filename == checkpoint_info.filename:
            already_loaded = loaded_model
            continue
        if len(model_data.loaded_sd_models) > shared.opts.sd_checkpoints_limit > 0:
            print(f"Unloading model {len(model_data.loaded_sd_models)} over the limit of {shared.opts.sd_checkpoints_limit}")
            del model_data.loaded_sd_models[i]
            send_model_to_trash(loaded_model)

    if already_loaded is not None:
        send_model_to_device(already_loaded)
        model_data.set_sd_model(already_loaded, already_loaded=True)
        if not SkipWritingToConfig.skip:
            shared.opts.data["sd_model_checkpoint"] = already_loaded.sd_checkpoint_info.title
            shared.opts.data["sd_checkpoint_hash"] = already_loaded.sd_checkpoint_info.sha256
        print(f"Using already loaded model {already_loaded.sd_checkpoint_info.title}")
        sd_vae.reload_vae_weights(already_loaded)
        return model_data.sd_model
    elif shared.opts.sd_checkpoints_limit > 1 and len(model_data.loaded_sd_models) < shared.opts.sd_checkpoints_limit:
        count = len(model_data.loaded_sd_models) + 1
        print(f"Loading model {checkpoint_info.title} ({count} out of {shared.opts.sd_checkpoints_limit})")
        model_data.sd_model = None
        load_model(checkpoint_info)
        return model_data.sd_model
    elif len(model_data.loaded_sd_models) > 0:
        sd_model = model_data.loaded_sd_models.pop()
        model_data.sd_model = sd_model
        print(f"Reusing loaded model {sd_model.sd_checkpoint_info.title} to load {checkpoint_info.title}")
        return sd_model
    else:
        return None


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    # mirrors sd_models.reload_model_weights: nothing to do for the loaded checkpoint; else reuse or unload
    # (sd_unet "None", hijack undone); a different config builds a new model (load_model, old one trashed),
    # the same config gets the new weights in place, then hijack, on_model_loaded and apply_unet()
    from modules import sd_hijack

    checkpoint_info = info or select_checkpoint()
    timer = Timer()

    if not sd_model:
        sd_model = model_data.sd_model

    if sd_model is None:
        current_checkpoint_info = None
    else:
        current_checkpoint_info = sd_model.sd_checkpoint_info
        if sd_model.sd_model_checkpoint == checkpoint_info.filename and not forced_reload:
            return sd_model

    sd_model = reuse_model_from_already_loaded(sd_model, checkpoint_info, timer)
    if not forced_reload and sd_model is not None and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model

    if sd_model is not None:
        sd_unet.apply_unet("None")
        send_model_to_cpu(sd_model)
        sd_hijack.model_hijack.undo_hijack(sd_model)

    state_dict = get_checkpoint_state_dict(checkpoint_info, timer)
    checkpoint_config = find_checkpoint_config(state_dict, checkpoint_info)

    if sd_model is None or checkpoint_config != sd_model.used_config:
        if sd_model is not None:
            send_model_to_trash(sd_model)
        load_model(checkpoint_info, already_loaded_state_dict=state_dict)
        return model_data.sd_model

    try:
        load_model_weights(sd_model, checkpoint_info, state_dict, timer)
    except Exception:
        print("Failed to load checkpoint, restoring previous")
        load_model_weights(sd_model, current_checkpoint_info, None, timer)
        raise
    finally:
        sd_hijack.model_hijack.hijack(sd_model)
        script_callbacks.model_loaded_callback(sd_model)

    model_data.set_sd_model(sd_model)
    sd_unet.apply_unet()
    return sd_model


def unload_model_weights(sd_model=None, info=None):
    # mirrors sd_models.unload_model_weights
    send_model_to_cpu(sd_model or shared.sd_model)
    return sd_model


def apply_token_merging(sd_model, token_merging_ratio):
    # mirrors sd_models.apply_token_merging: tomesd's patch on the model's BasicTransformerBlocks
    current_token_merging_ratio = getattr(sd_model, "applied_token_merged_ratio", 0)
    if current_token_merging_ratio == token_merging_ratio:
        return
    if current_token_merging_ratio > 0:
        tomesd.remove_patch(sd_model)
    if token_merging_ratio > 0:
        tomesd.apply_patch(
            sd_model,
            ratio=token_merging_ratio,
            use_rand=False,  # can cause issues with some samplers
            merge_attn=True,
            merge_crossattn=False,
            merge_mlp=False,
        )
    sd_model.applied_token_merged_ratio = token_merging_ratio


def rescale_zero_terminal_snr_abar(alphas_cumprod):
    # mirrors sd_models.rescale_zero_terminal_snr_abar: shift/scale sqrt(alpha_bar) so the last is ~0
    sqrt_bar = alphas_cumprod.sqrt()
    first = sqrt_bar[0].clone()
    last = sqrt_bar[-1].clone()
    sqrt_bar -= last
    sqrt_bar *= first / (first - last)
    alphas_bar = sqrt_bar**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return alphas_bar


def apply_alpha_schedule_override(sd_model, p=None):
    # mirrors sd_models.apply_alpha_schedule_override: restores alphas_cumprod from alphas_cumprod_original,
    # then optionally downcasts it to fp16 and/or rescales it to zero terminal SNR
    if not hasattr(sd_model, "alphas_cumprod") or not hasattr(sd_model, "alphas_cumprod_original"):
        return
    sd_model.alphas_cumprod = sd_model.alphas_cumprod_original.to(shared.device)
    if opts.use_downcasted_alpha_bar:
        if p is not None:
            p.extra_generation_params["Downcast alphas_cumprod"] = opts.use_downcasted_alpha_bar
        sd_model.alphas_cumprod = sd_model.alphas_cumprod.half().to(shared.device)
    if opts.sd_noise_schedule == "Zero Terminal SNR":
        if p is not None:
            p.extra_generation_params["Noise Schedule"] = opts.sd_noise_schedule
        sd_model.alphas_cumprod = rescale_zero_terminal_snr_abar(sd_model.alphas_cumprod).to(shared.device)
