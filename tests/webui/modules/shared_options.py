"""Mirrors modules/shared_options.py: the option templates, for the options the stand-in reads.

Simplified: only a subset of the real settings is declared (those read by processing, the samplers,
the CFG denoiser, infotext and the UI); each has the real key, default and infotext label.
Components are left out (``component=None``) except where a component type is the value's type."""

from modules.options import OptionInfo, categories, options_section
from modules.shared_cmd_options import cmd_opts

categories.register_category("saving", "Saving images")
categories.register_category("sd", "Stable Diffusion")
categories.register_category("ui", "User Interface")
categories.register_category("system", "System")
categories.register_category("postprocessing", "Postprocessing")

restricted_opts = {
    "samples_filename_pattern",
    "directories_filename_pattern",
    "outdir_samples",
    "outdir_txt2img_samples",
    "outdir_img2img_samples",
    "outdir_extras_samples",
    "outdir_grids",
    "outdir_txt2img_grids",
    "outdir_save",
    "outdir_init_images",
}

options_templates = {}

options_templates.update(
    options_section(
        ("saving-images", "Saving images/grids", "saving"),
        {
            "samples_save": OptionInfo(True, "Always save all generated images"),
            "samples_format": OptionInfo("png", "File format for images"),
            "grid_save": OptionInfo(True, "Always save all generated image grids"),
            "grid_format": OptionInfo("png", "File format for grids"),
            "grid_extended_filename": OptionInfo(False, "Add extended info (seed, prompt) to filename when saving grid"),
            "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),
            "grid_prevent_empty_spots": OptionInfo(False, "Prevent empty spots in grid (when set to autodetect)"),
            "grid_background_color": OptionInfo("#ffffff", "Background color for image grids"),
            "font": OptionInfo("", "Font for image grids that have text"),
            "grid_text_active_color": OptionInfo("#000000", "Text color for image grids"),
            "grid_text_inactive_color": OptionInfo("#999999", "Inactive text color for image grids"),
            "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size"),
            "enable_pnginfo": OptionInfo(True, "Write infotext to metadata of the generated image"),
            "save_images_before_face_restoration": OptionInfo(False, "Save a copy of image before doing face restoration."),
            "save_images_before_highres_fix": OptionInfo(False, "Save a copy of image before applying highres fix."),
            "save_images_before_color_correction": OptionInfo(
                False, "Save a copy of image before applying color correction to img2img results"
            ),
            "save_mask": OptionInfo(False, "For inpainting, save a copy of the greyscale mask"),
            "save_mask_composite": OptionInfo(False, "For inpainting, save a masked composite"),
            "save_init_img": OptionInfo(False, "Save init images when using img2img"),
            "save_incomplete_images": OptionInfo(False, "Save incomplete images"),
            "img_max_size_mp": OptionInfo(200, "Maximum image size"),
        },
    )
)

options_templates.update(
    options_section(
        ("saving-paths", "Paths for saving", "saving"),
        {
            "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below"),
            "outdir_txt2img_samples": OptionInfo("outputs/txt2img-images", "Output directory for txt2img images"),
            "outdir_img2img_samples": OptionInfo("outputs/img2img-images", "Output directory for img2img images"),
            "outdir_grids": OptionInfo("", "Output directory for grids; if empty, defaults to two directories below"),
            "outdir_txt2img_grids": OptionInfo("outputs/txt2img-grids", "Output directory for txt2img grids"),
            "outdir_img2img_grids": OptionInfo("outputs/img2img-grids", "Output directory for img2img grids"),
            "outdir_init_images": OptionInfo("outputs/init-images", "Directory for saving init images when using img2img"),
        },
    )
)

options_templates.update(
    options_section(
        ("face-restoration", "Face restoration", "postprocessing"),
        {
            "face_restoration": OptionInfo(False, "Restore faces", infotext="Face restoration"),
            "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model"),
        },
    )
)

options_templates.update(
    options_section(
        ("system", "System", "system"),
        {
            "enable_console_prompts": OptionInfo(
                cmd_opts.enable_console_prompts, "Print prompts to console when generating with txt2img and img2img."
            ),
            "samples_log_stdout": OptionInfo(False, "Always print all generation info to standard output"),
            "memmon_poll_rate": OptionInfo(8, "VRAM usage polls per second during generation."),
        },
    )
)

options_templates.update(
    options_section(
        ("sd", "Stable Diffusion", "sd"),
        {
            "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
            "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
            "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device"),
            "sd_checkpoint_cache": OptionInfo(0, "Checkpoints to cache in RAM"),
            "sd_unet": OptionInfo("Automatic", "SD Unet"),  # choices: shared_items.sd_unet_items()
            "enable_quantization": OptionInfo(
                False, "Enable quantization in K samplers for sharper and cleaner results. This may change existing seeds"
            ).needs_reload_ui(),
            "emphasis": OptionInfo("Original", "Emphasis mode", infotext="Emphasis"),
            "enable_batch_seeds": OptionInfo(
                True, "Make K-diffusion samplers produce same images in a batch as when making a single image"
            ),
            "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit"),
            "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL"),
            "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", infotext="Clip skip"),
            "upcast_attn": OptionInfo(False, "Upcast cross attention layer to float32"),
            "randn_source": OptionInfo("GPU", "Random number generator source.", infotext="RNG"),
            "tiling": OptionInfo(False, "Tiling", infotext="Tiling"),
            "hires_fix_refiner_pass": OptionInfo(
                "second pass", "Hires fix: which pass to enable refiner for", infotext="Hires refiner"
            ),
        },
    )
)

options_templates.update(
    options_section(
        ("sdxl", "Stable Diffusion XL", "sd"),
        {
            "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
            "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
        },
    )
)

options_templates.update(
    options_section(
        ("vae", "VAE", "sd"),
        {
            "sd_vae": OptionInfo("Automatic", "SD VAE", infotext="VAE"),
            "auto_vae_precision_bfloat16": OptionInfo(False, "Automatically convert VAE to bfloat16"),
            "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats"),
            "sd_vae_encode_method": OptionInfo("Full", "VAE type for encode", infotext="VAE Encoder"),
            "sd_vae_decode_method": OptionInfo("Full", "VAE type for decode", infotext="VAE Decoder"),
        },
    )
)

options_templates.update(
    options_section(
        ("img2img", "img2img", "sd"),
        {
            "inpainting_mask_weight": OptionInfo(
                1.0, "Inpainting conditioning mask strength", infotext="Conditional mask weight"
            ),
            "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img", infotext="Noise multiplier"),
            "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix", infotext="Extra noise"),
            "img2img_color_correction": OptionInfo(False, "Apply color correction to img2img results to match original colors."),
            "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies."),
            "img2img_background_color": OptionInfo(
                "#ffffff", "With img2img, fill transparent parts of the input image with this color."
            ),
            "return_mask": OptionInfo(False, "For inpainting, include the greyscale mask in results for web"),
            "return_mask_composite": OptionInfo(False, "For inpainting, include masked composite in results for web"),
            "img2img_batch_show_results_limit": OptionInfo(32, "Show the first N batch img2img results in UI"),
            "overlay_inpaint": OptionInfo(True, "Overlay original for inpaint"),
        },
    )
)

options_templates.update(
    options_section(
        ("optimizations", "Optimizations", "sd"),
        {
            "cross_attention_optimization": OptionInfo("Automatic", "Cross attention optimization"),
            "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", infotext="NGMS"),
            "s_min_uncond_all": OptionInfo(False, "Negative Guidance minimum sigma all steps", infotext="NGMS all steps"),
            "token_merging_ratio": OptionInfo(0.0, "Token merging ratio", infotext="Token merging ratio"),
            "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img"),
            "token_merging_ratio_hr": OptionInfo(0.0, "Token merging ratio for high-res pass", infotext="Token merging ratio hr"),
            "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt", infotext="Pad conds"),
            "pad_cond_uncond_v0": OptionInfo(False, "Pad prompt/negative prompt (v0)", infotext="Pad conds v0"),
            "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),
            "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),
            "fp8_storage": OptionInfo("Disable", "FP8 weight"),
            "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),
        },
    )
)

options_templates.update(
    options_section(
        ("compatibility", "Compatibility", "sd"),
        {
            "auto_backcompat": OptionInfo(True, "Automatic backward compatibility"),
            "use_old_emphasis_implementation": OptionInfo(
                False, "Use old emphasis implementation. Can be useful to reproduce old seeds."
            ),
            "use_old_karras_scheduler_sigmas": OptionInfo(False, "Use old karras scheduler sigmas (0.1 to 10)."),
            "no_dpmpp_sde_batch_determinism": OptionInfo(
                False, "Do not make DPM++ SDE deterministic across different batch sizes."
            ),
            "use_old_hires_fix_width_height": OptionInfo(
                False,
                "For hires fix, use width/height sliders to set final resolution rather than first pass "
                "(disables Upscale by, Resize width/height to).",
            ),
            "hires_fix_use_firstpass_conds": OptionInfo(
                False, "For hires fix, calculate conds of second pass using extra networks of first pass."
            ),
            "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines.", infotext="Old prompt editing timelines"),
            "use_downcasted_alpha_bar": OptionInfo(
                False,
                "Downcast model alphas_cumprod to fp16 before sampling. For reproducing old seeds.",
                infotext="Downcast alphas_cumprod",
            ),
            "refiner_switch_by_sample_steps": OptionInfo(
                False,
                "Switch to refiner by sampling steps instead of model timesteps. Old behavior for refiner.",
                infotext="Refiner switch by sampling steps",
            ),
        },
    )
)

options_templates.update(
    options_section(
        ("ui_gallery", "Gallery", "ui"),
        {
            "return_grid": OptionInfo(True, "Show grid in gallery"),
            "do_not_show_images": OptionInfo(False, "Do not show any images in gallery"),
        },
    )
)

options_templates.update(
    options_section(
        ("ui_alternatives", "UI alternatives", "ui"),
        {
            "compact_prompt_box": OptionInfo(False, "Compact prompt layout"),
            "samplers_in_dropdown": OptionInfo(
                True, "Use dropdown for sampler selection instead of radio group"
            ).needs_reload_ui(),
            "dimensions_and_batch_together": OptionInfo(
                True, "Show Width/Height and Batch sliders in same row"
            ).needs_reload_ui(),
            "sd_checkpoint_dropdown_use_short": OptionInfo(False, "Checkpoint dropdown: use filenames without paths"),
            "hires_fix_show_sampler": OptionInfo(
                False, "Hires fix: show hires checkpoint and sampler selection"
            ).needs_reload_ui(),
            "hires_fix_show_prompts": OptionInfo(False, "Hires fix: show hires prompt and negative prompt").needs_reload_ui(),
            "txt2img_settings_accordion": OptionInfo(False, "Settings in txt2img hidden under Accordion").needs_reload_ui(),
            "img2img_settings_accordion": OptionInfo(False, "Settings in img2img hidden under Accordion").needs_reload_ui(),
        },
    )
)

options_templates.update(
    options_section(
        ("ui", "User interface", "ui"),
        {
            "ui_reorder_list": OptionInfo([], "UI item order for txt2img/img2img tabs").needs_reload_ui(),
            "enable_reloading_ui_scripts": OptionInfo(False, "Reload UI scripts when using Reload UI option"),
        },
    )
)

options_templates.update(
    options_section(
        ("infotext", "Infotext", "ui"),
        {
            "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),
            "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),
            "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext"),
            "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext"),
            "add_user_name_to_info": OptionInfo(False, "Add user name to infotext when authenticated"),
            "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),
            "disable_weights_auto_swap": OptionInfo(True, "Disregard checkpoint information from pasted infotext"),
            "infotext_skip_pasting": OptionInfo([], "Disregard fields from pasted infotext"),
            "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext"),
        },
    )
)

options_templates.update(
    options_section(
        ("ui", "Live previews", "ui"),
        {
            "show_progressbar": OptionInfo(True, "Show progressbar"),
            "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
            "live_previews_image_format": OptionInfo("png", "Live preview file format"),
            "show_progress_grid": OptionInfo(True, "Show previews of all images generated in a batch as a grid"),
            "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
            "show_progress_type": OptionInfo("Approx NN", "Live preview method"),
            "live_preview_allow_lowvram_full": OptionInfo(False, "Allow Full live preview method with lowvram/medvram"),
            "live_preview_content": OptionInfo("Prompt", "Live preview subject"),
            "live_preview_refresh_period": OptionInfo(1000, "Progressbar and preview update period"),
            "live_preview_fast_interrupt": OptionInfo(False, "Return image with chosen live preview method on interrupt"),
        },
    )
)

options_templates.update(
    options_section(
        ("sampler-params", "Sampler parameters", "sd"),
        {
            "hide_samplers": OptionInfo([], "Hide samplers in user interface").needs_reload_ui(),
            "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext="Eta DDIM"),
            "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext="Eta"),
            "ddim_discretize": OptionInfo("uniform", "img2img DDIM discretize"),
            "s_churn": OptionInfo(0.0, "sigma churn", infotext="Sigma churn"),
            "s_tmin": OptionInfo(0.0, "sigma tmin", infotext="Sigma tmin"),
            "s_tmax": OptionInfo(0.0, "sigma tmax", infotext="Sigma tmax"),
            "s_noise": OptionInfo(1.0, "sigma noise", infotext="Sigma noise"),
            "sigma_min": OptionInfo(0.0, "sigma min", infotext="Schedule min sigma"),
            "sigma_max": OptionInfo(0.0, "sigma max", infotext="Schedule max sigma"),
            "rho": OptionInfo(0.0, "rho", infotext="Schedule rho"),
            "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", infotext="ENSD"),
            "always_discard_next_to_last_sigma": OptionInfo(
                False, "Always discard next-to-last sigma", infotext="Discard penultimate sigma"
            ),
            "sgm_noise_multiplier": OptionInfo(False, "SGM noise multiplier", infotext="SGM noise multiplier"),
            "uni_pc_variant": OptionInfo("bh1", "UniPC variant", infotext="UniPC variant"),
            "uni_pc_skip_type": OptionInfo("time_uniform", "UniPC skip type", infotext="UniPC skip type"),
            "uni_pc_order": OptionInfo(3, "UniPC order", infotext="UniPC order"),
            "uni_pc_lower_order_final": OptionInfo(True, "UniPC lower order final", infotext="UniPC lower order final"),
            "sd_noise_schedule": OptionInfo("Default", "Noise schedule for sampling", infotext="Noise Schedule"),
            "skip_early_cond": OptionInfo(0.0, "Ignore negative prompt during early sampling", infotext="Skip Early CFG"),
            "beta_dist_alpha": OptionInfo(0.6, "Beta scheduler - alpha", infotext="Beta scheduler alpha"),
            "beta_dist_beta": OptionInfo(0.6, "Beta scheduler - beta", infotext="Beta scheduler beta"),
        },
    )
)

options_templates.update(
    options_section(
        ("postprocessing", "Postprocessing", "postprocessing"),
        {
            "postprocessing_enable_in_main_ui": OptionInfo([], "Enable postprocessing operations in txt2img and img2img tabs"),
            "postprocessing_disable_in_extras": OptionInfo([], "Disable postprocessing operations in extras tab"),
            "postprocessing_operation_order": OptionInfo([], "Postprocessing operation order"),
            "upscaler_for_img2img": OptionInfo(None, "Upscaler for img2img"),
        },
    )
)

options_templates.update(
    options_section(
        (None, "Hidden options"),
        {
            "disabled_extensions": OptionInfo([], "Disable these extensions"),
            "disable_all_extensions": OptionInfo("none", "Disable all extensions (preserves the list of disabled extensions)"),
            "restore_config_state_file": OptionInfo("", "Config state file to restore from, under 'config-states/' folder"),
            "sd_checkpoint_hash": OptionInfo("", "SHA256 hash of the current checkpoint"),
        },
    )
)
