"""Stand-in for modules/shared_options.py: the WebUI's own settings, as ``options_templates`` (which
``shared.opts`` uses as its table of declared settings, so options added to it later are declared too).

Only the settings some code reads are declared: by the stand-in's modules, the X/Y/Z plot axes, the
extension or the tests. Each has the real key, default and infotext key; its settings-page label,
component and help text are left out, since the stand-in builds settings components only for options
that extensions add. They are grouped here by what they govern, under the real section ids."""

from __future__ import annotations

from typing import Any, Dict

from modules.options import OptionInfo, options_section

options_templates: Dict[str, OptionInfo] = {}

_INFOTEXT_KEYS = {
    "face_restoration": "Face restoration", "emphasis": "Emphasis", "CLIP_stop_at_last_layers": "Clip skip",
    "randn_source": "RNG", "tiling": "Tiling", "hires_fix_refiner_pass": "Hires refiner", "sd_vae": "VAE",
    "sd_vae_encode_method": "VAE Encoder", "sd_vae_decode_method": "VAE Decoder", "img2img_extra_noise": "Extra noise",
    "inpainting_mask_weight": "Conditional mask weight", "initial_noise_multiplier": "Noise multiplier",
    "s_min_uncond": "NGMS", "s_min_uncond_all": "NGMS all steps", "token_merging_ratio": "Token merging ratio",
    "token_merging_ratio_hr": "Token merging ratio hr", "pad_cond_uncond": "Pad conds", "pad_cond_uncond_v0": "Pad conds v0",
    "use_old_scheduling": "Old prompt editing timelines", "use_downcasted_alpha_bar": "Downcast alphas_cumprod",
    "refiner_switch_by_sample_steps": "Refiner switch by sampling steps", "eta_ddim": "Eta DDIM", "eta_ancestral": "Eta",
    "s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise",
    "sigma_min": "Schedule min sigma", "sigma_max": "Schedule max sigma", "rho": "Schedule rho", "eta_noise_seed_delta": "ENSD",
    "always_discard_next_to_last_sigma": "Discard penultimate sigma", "sgm_noise_multiplier": "SGM noise multiplier",
    "uni_pc_variant": "UniPC variant", "uni_pc_skip_type": "UniPC skip type", "uni_pc_order": "UniPC order",
    "uni_pc_lower_order_final": "UniPC lower order final", "sd_noise_schedule": "Noise Schedule",
    "skip_early_cond": "Skip Early CFG", "beta_dist_alpha": "Beta scheduler alpha", "beta_dist_beta": "Beta scheduler beta",
}
"""Settings that travel in infotexts: setting key -> infotext key."""


def _declare(section_id: str, title: str, **defaults: Any) -> None:
    declared = {key: OptionInfo(default, infotext=_INFOTEXT_KEYS.get(key)) for key, default in defaults.items()}
    options_templates.update(options_section((section_id, title), declared))


# the checkpoint, its text encoder, U-Net and VAE
_declare("sd", "Stable Diffusion", sd_model_checkpoint=None, sd_checkpoint_hash="", sd_checkpoints_limit=1,
         sd_checkpoints_keep_in_cpu=True, sd_checkpoint_cache=0, sd_unet="Automatic", CLIP_stop_at_last_layers=1,
         emphasis="Original", comma_padding_backtrack=20, sdxl_clip_l_skip=False, randn_source="GPU", tiling=False,
         enable_quantization=False, hires_fix_refiner_pass="second pass", upcast_attn=False)
_declare("sdxl", "Stable Diffusion XL", sdxl_crop_top=0, sdxl_crop_left=0)
_declare("vae", "VAE", sd_vae="Automatic", sd_vae_encode_method="Full", sd_vae_decode_method="Full")

# how sampling runs
_declare("optimizations", "Optimizations", cross_attention_optimization="Automatic", batch_cond_uncond=True,
         persistent_cond_cache=True, pad_cond_uncond=False, pad_cond_uncond_v0=False, s_min_uncond=0.0,
         s_min_uncond_all=False, token_merging_ratio=0.0, token_merging_ratio_img2img=0.0, token_merging_ratio_hr=0.0,
         fp8_storage="Disable", cache_fp16_weight=False)
_declare("sampler-params", "Sampler parameters", hide_samplers=[], eta_ddim=0.0, eta_ancestral=1.0,
         ddim_discretize="uniform", eta_noise_seed_delta=0, s_churn=0.0, s_tmin=0.0, s_tmax=0.0, s_noise=1.0,
         sigma_min=0.0, sigma_max=0.0, rho=0.0, always_discard_next_to_last_sigma=False, sgm_noise_multiplier=False,
         sd_noise_schedule="Default", skip_early_cond=0.0, beta_dist_alpha=0.6, beta_dist_beta=0.6,
         uni_pc_variant="bh1", uni_pc_skip_type="time_uniform", uni_pc_order=3, uni_pc_lower_order_final=True)
_declare("img2img", "img2img", img2img_fix_steps=False, img2img_extra_noise=0.0, initial_noise_multiplier=1.0,
         inpainting_mask_weight=1.0, img2img_color_correction=False, img2img_background_color="#ffffff",
         overlay_inpaint=True, return_mask=False, return_mask_composite=False)
_declare("compatibility", "Compatibility", auto_backcompat=True, use_old_scheduling=False, use_downcasted_alpha_bar=False,
         refiner_switch_by_sample_steps=False, use_old_karras_scheduler_sigmas=False, no_dpmpp_sde_batch_determinism=False,
         use_old_hires_fix_width_height=False, hires_fix_use_firstpass_conds=False)
_declare("face-restoration", "Face restoration", face_restoration=False, face_restoration_model="CodeFormer")

# what is written where, and what the infotext holds
_declare("saving-images", "Saving images/grids", samples_save=True, samples_format="png", grid_save=True,
         grid_format="png", grid_extended_filename=False, grid_only_if_multiple=True, grid_prevent_empty_spots=False,
         n_rows=-1, font="", grid_background_color="#ffffff", grid_text_active_color="#000000",
         grid_text_inactive_color="#999999", enable_pnginfo=True, save_images_before_highres_fix=False, save_mask=False,
         save_mask_composite=False, save_init_img=False, save_incomplete_images=False, img_max_size_mp=200)
_declare("saving-paths", "Paths for saving", outdir_samples="", outdir_grids="",
         outdir_txt2img_samples="outputs/txt2img-images", outdir_img2img_samples="outputs/img2img-images",
         outdir_txt2img_grids="outputs/txt2img-grids", outdir_img2img_grids="outputs/img2img-grids")
_declare("infotext", "Infotext", add_model_name_to_info=True, add_model_hash_to_info=True, add_vae_name_to_info=True,
         add_vae_hash_to_info=True, add_user_name_to_info=False, add_version_to_infotext=True,
         disable_weights_auto_swap=True, infotext_skip_pasting=[], infotext_styles="Apply if any")
_declare("system", "System", enable_console_prompts=False, samples_log_stdout=False)
_declare("postprocessing", "Postprocessing", upscaler_for_img2img=None)

# the UI
_declare("ui", "User interface", ui_reorder_list=[], samplers_in_dropdown=True, dimensions_and_batch_together=True,
         hires_fix_show_sampler=False, hires_fix_show_prompts=False, return_grid=True, do_not_show_images=False)
_declare("ui", "Live previews", live_previews_enable=True, show_progress_every_n_steps=10, show_progress_type="Approx NN",
         live_preview_content="Prompt", live_preview_fast_interrupt=False)
