"""Stand-in for the WebUI's modules/sd_samplers_cfg_denoiser.py: CFGDenoiser, the classifier-free
guidance step every sampler calls once per model evaluation.

How one call lays out its rows, as the real one does:
- the cond rows: image i's latent repeated once per AND sub-prompt of image i, images in order; then the
  uncond rows, one per image. sigma and the image conditioning follow the same layout;
- the cfg_denoiser callbacks see (and may replace) these full tensors, before it is decided whether the
  uncond rows are dropped (skip_early_cond, or NGMS: ``s_min_uncond``);
- cond and uncond of the same token length (or no uncond rows) go to the model in one call with
  batch_cond_uncond, else in calls of one row per image; different lengths (unless padded by an
  option) send the cond rows in chunks and the uncond rows in a call of their own;
- the result is uncond + sum over sub-prompts of weight * scale * (cond - uncond).

Simplified: no InstructPix2Pix ("edit") or unCLIP ("crossattn-adm") models, which the stand-in
checkpoints never are; the "Combined" live preview uses the guided result of each image."""

from __future__ import annotations

import torch

from modules import prompt_parser, sd_samplers_common, shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)
from modules.shared import opts, state


def catenate_conds(conds):
    """sd_samplers_cfg_denoiser.catenate_conds: row-wise concatenation of tensors or SDXL cond dicts."""
    if isinstance(conds[0], dict):
        return {key: torch.cat([cond[key] for cond in conds]) for key in conds[0]}
    return torch.cat(conds)


def subscript_cond(cond, a, b):
    """sd_samplers_cfg_denoiser.subscript_cond: rows a:b of a tensor or of every tensor of a cond dict."""
    if isinstance(cond, dict):
        return {key: value[a:b] for key, value in cond.items()}
    return cond[a:b]


def _change_crossattn(cond, change):
    """Apply ``change`` to the cross-attention tensor, in place for an SDXL dict (which keeps its type)."""
    if isinstance(cond, dict):
        cond["crossattn"] = change(cond["crossattn"])
        return cond
    return change(cond)


def pad_cond(tensor, repeats, empty):
    """sd_samplers_cfg_denoiser.pad_cond: append ``repeats`` chunks of the empty prompt's conditioning."""
    return _change_crossattn(tensor, lambda t: torch.cat([t, empty.repeat((t.shape[0], repeats, 1))], dim=1))


def _model_conditioning(crossattn, image_cond):
    """The ``cond`` argument of the model wrapper: SDXL's dict gets the image conditioning added."""
    if isinstance(crossattn, dict):
        return {**crossattn, "c_concat": [image_cond]}
    return {"c_crossattn": [crossattn], "c_concat": [image_cond]}


class CFGDenoiser(torch.nn.Module):
    """sd_samplers_cfg_denoiser.CFGDenoiser. Subclasses provide ``inner_model`` (the model wrapper of
    their sampler family) and, where the model output is not x0, ``get_pred_x0``.

    ``step`` counts this run's calls; ``total_steps`` is the budget (twice the steps for second-order
    samplers); ``cond_scale_miltiplier`` (sic, the real attribute) scales the CFG scale (DDIM CFG++)."""

    def __init__(self, sampler):
        super().__init__()
        self.sampler, self.p, self.model_wrap = sampler, None, None
        self.mask = self.nmask = self.init_latent = None
        self.steps = self.total_steps = None
        self.step = 0
        self.padded_cond_uncond = self.padded_cond_uncond_v0 = False
        self.cond_scale_miltiplier = 1.0
        self.need_last_noise_uncond, self.last_noise_uncond = False, None
        self.mask_before_denoising = False  # the timestep samplers blend the inpainting mask into the input

    @property
    def inner_model(self):
        """The sampler family's model wrapper around the loaded model (``make_wrapper``), made on
        first use and again after a refiner switch (``update_inner_model`` forgets it)."""
        wrapper = self.model_wrap
        if wrapper is None:
            wrapper = self.model_wrap = self.make_wrapper(shared.sd_model)
        return wrapper

    def make_wrapper(self, model):
        raise NotImplementedError

    def get_pred_x0(self, x_in, x_out, sigma):
        return x_out

    def update_inner_model(self):
        """CFGDenoiser.update_inner_model, after a refiner switch: a fresh wrapper around the new model, and
        the sampler's conds recomputed by it."""
        self.model_wrap = None
        self.sampler.sampler_extra_args["cond"], self.sampler.sampler_extra_args["uncond"] = self.p.get_conds()

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        """CFGDenoiser.combine_denoised: each image's uncond result moved towards each of its sub-prompts'."""
        unconditioned = x_out[-uncond.shape[0] :]
        guided = unconditioned.clone()
        for image, sub_prompts in enumerate(conds_list):
            for row, weight in sub_prompts:
                guided[image] += (x_out[row] - unconditioned[image]) * (weight * cond_scale)
        return guided

    def pad_cond_uncond(self, cond, uncond):
        """CFGDenoiser.pad_cond_uncond (option pad_cond_uncond): pad the shorter side with empty-prompt chunks."""
        empty = shared.sd_model.cond_stage_model_empty_prompt
        chunks = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
        if chunks:
            self.padded_cond_uncond = True
            if chunks < 0:
                cond = pad_cond(cond, -chunks, empty)
            else:
                uncond = pad_cond(uncond, chunks, empty)
        return cond, uncond

    def pad_cond_uncond_v0(self, cond, uncond):
        """CFGDenoiser.pad_cond_uncond_v0 (option pad_cond_uncond_v0): fit the uncond to the cond's length by
        repeating its last token vector, or by cutting it."""
        length = cond.shape[1]

        def fit(vectors):
            if vectors.shape[1] == length:
                return vectors
            self.padded_cond_uncond_v0 = True
            if vectors.shape[1] > length:
                return vectors[:, :length]
            return torch.hstack([vectors, vectors[:, -1:].repeat([1, length - vectors.shape[1], 1])])

        return cond, _change_crossattn(uncond, fit)

    def _blend(self, latent, sigma):
        """The inpainting blend: the unmasked area from the original latent; scripts may change it (on_mask_blend)."""
        blended = latent * self.nmask + self.init_latent * self.mask
        if self.p.scripts is None:
            return blended
        from modules import scripts

        args = scripts.MaskBlendArgs(latent, self.nmask, self.init_latent, self.mask, blended, denoiser=self, sigma=sigma)
        self.p.scripts.on_mask_blend(self.p, args)
        return args.blended_latent

    def _skips_uncond(self, sigma, s_min_uncond) -> bool:
        """Whether this call drops the uncond rows: during the first skip_early_cond share of the calls,
        or (NGMS) on odd calls, or every call with s_min_uncond_all, while sigma is below s_min_uncond."""
        extra = self.p.extra_generation_params
        if opts.skip_early_cond != 0.0 and self.step / self.total_steps <= opts.skip_early_cond:
            extra["Skip Early CFG"] = opts.skip_early_cond
            return True
        ngms = (self.step % 2 or opts.s_min_uncond_all) and 0 < s_min_uncond and sigma[0] < s_min_uncond
        if not ngms:
            return False
        extra["NGMS"] = s_min_uncond
        if opts.s_min_uncond_all:
            extra["NGMS all steps"] = opts.s_min_uncond_all
        return True

    def _padded(self, cond, uncond):
        self.padded_cond_uncond = self.padded_cond_uncond_v0 = False
        if cond.shape[1] != uncond.shape[1]:
            if opts.pad_cond_uncond_v0:
                return self.pad_cond_uncond_v0(cond, uncond)
            if opts.pad_cond_uncond:
                return self.pad_cond_uncond(cond, uncond)
        return cond, uncond

    def _run_model(self, x_in, sigma_in, image_cond_in, cond, uncond, images, skip_uncond):
        """The model calls for the stacked rows, batched as the real forward does (module docstring)."""
        if skip_uncond or cond.shape[1] == uncond.shape[1]:
            crossattn = cond if skip_uncond else catenate_conds([cond, uncond])
            if opts.batch_cond_uncond:  # one call; the image conditioning is passed whole, as in the real one
                return self.inner_model(x_in, sigma_in, cond=_model_conditioning(crossattn, image_cond_in))
            calls = [(a, a + images, subscript_cond(crossattn, a, a + images)) for a in range(0, len(x_in), images)]
        else:
            chunk = images * 2 if opts.batch_cond_uncond else images
            cond_rows = cond.shape[0]
            calls = [(a, min(a + chunk, cond_rows), subscript_cond(cond, a, a + chunk)) for a in range(0, cond_rows, chunk)]
            calls.append((len(x_in) - uncond.shape[0], len(x_in), uncond))
        x_out = torch.zeros_like(x_in)
        for a, b, crossattn in calls:
            x_out[a:b] = self.inner_model(x_in[a:b], sigma_in[a:b], cond=_model_conditioning(crossattn, image_cond_in[a:b]))
        return x_out

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        """CFGDenoiser.forward: one guided model evaluation (see the module docstring)."""
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        if sd_samplers_common.apply_refiner(self, sigma):
            cond, uncond = self.sampler.sampler_extra_args["cond"], self.sampler.sampler_extra_args["uncond"]

        conds_list, text_cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        text_uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        images = len(conds_list)
        first_rows = [sub_prompts[0][0] for sub_prompts in conds_list]  # each image's first cond row

        if self.mask_before_denoising and self.mask is not None:
            x = self._blend(x, sigma)

        sub_prompt_counts = torch.tensor([len(sub_prompts) for sub_prompts in conds_list], device=x.device)

        def stacked(values):
            return torch.cat([values.repeat_interleave(sub_prompt_counts, dim=0), values])

        progress = state.sampling_step, state.sampling_steps
        params = CFGDenoiserParams(stacked(x), stacked(image_cond), stacked(sigma), *progress, text_cond, text_uncond, self)
        cfg_denoiser_callback(params)
        x_in, sigma_in, text_cond, text_uncond = params.x, params.sigma, params.text_cond, params.text_uncond

        skip_uncond = self._skips_uncond(sigma, s_min_uncond)
        if skip_uncond:
            x_in, sigma_in = x_in[:-images], sigma_in[:-images]
        text_cond, text_uncond = self._padded(text_cond, text_uncond)
        x_out = self._run_model(x_in, sigma_in, params.image_cond, text_cond, text_uncond, images, skip_uncond)
        if skip_uncond:  # each image's first sub-prompt result stands in for its uncond result
            x_out = torch.cat([x_out, x_out[first_rows]])

        cfg_denoised_callback(CFGDenoisedParams(x_out, *progress, self.inner_model))
        if self.need_last_noise_uncond:
            self.last_noise_uncond = x_out[-text_uncond.shape[0] :].clone()

        scale = 1.0 if skip_uncond else cond_scale * self.cond_scale_miltiplier
        denoised = self.combine_denoised(x_out, conds_list, text_uncond, scale)
        if not self.mask_before_denoising and self.mask is not None:
            denoised = self._blend(denoised, sigma)

        self.sampler.last_latent = self.get_pred_x0(x_in[first_rows], x_out[first_rows], sigma)
        sd_samplers_common.store_latent(self._preview(x_in, x_out, denoised, first_rows, text_uncond.shape[0], sigma))

        after = AfterCFGCallbackParams(denoised, *progress)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x

    def _preview(self, x_in, x_out, denoised, first_rows, uncond_rows, sigma):
        """The live preview's latent, by opts.live_preview_content."""
        if opts.live_preview_content == "Prompt":
            return self.sampler.last_latent
        if opts.live_preview_content == "Negative prompt":
            return self.get_pred_x0(x_in[-uncond_rows:], x_out[-uncond_rows:], sigma)
        return self.get_pred_x0(x_in[first_rows], denoised, sigma)
