// Tooltips for the MasaCtrl accordion, attached by element id once the UI exists and following the
// layout, and the layer sliders kept to the loaded model's range when the checkpoint changes.
(function () {
    const tooltips = {
        enabled: "Pair the batch: the first half are sources, the second half targets that keep their source's subject and textures.",
        source_prompt: "Prompt of the source images (the first half of the batch). Empty: the main prompt.",
        mode: "mutual: targets read only their source's features (the paper). union: their source's and their own.",
        strength: "How much of the source the targets take in the controlled steps and layers: 1 the full control (the paper), 0 none, 0.5 half their source's attention and half their own.",
        start_step: "First sampling step (counted from 0) with control; -1: about 8% of the steps (4 of 50, as the paper; 0 at 4-6 steps). Earlier steps let the target find its own layout.",
        end_step: "Control stops before this step. Values past the last step mean: until the end.",
        start_layer: "First U-Net transformer layer with control. -1: the model's default (10 of 16 on SD1/SD2, 44 of 70 on SDXL).",
        end_layer: "Control stops before this layer. Values past the last layer mean: through the last layer.",
        hires: "Also control the hires fix second pass. Sources and targets stay paired either way.",
        controlnet: "Which images the enabled ControlNet units act on: the targets only (the paper: sources keep their own layout), both, or per unit.",
        controlnet_units: "One entry per enabled ControlNet unit, in tab order: source, target or both. Example: source, target.",
        invert: "Invert the init image to noise along the sampler's schedule, so that the source rows reconstruct it and the targets edit it.",
        inversion_cfg: "Guidance scale of the inversion. 1 (the paper) follows the source prompt alone and reconstructs most faithfully.",
        show_reconstruction: "Show and save the reconstruction of the init image beside each edit.",
        mask_mode: "Keep subject and background apart: masks from the cross-attention maps of subject words, or masks you upload.",
        mask_words: "Words of the source prompt naming the subject, comma separated (e.g. corgi). Their attention maps make the source's mask.",
        mask_target_words: "Words of the target prompt naming the subject. Empty: the source subject words.",
        mask_threshold: "Attention maps are scaled to 0-1 per image; at or above this value is subject.",
        show_masks: "Add the masks MasaCtrl used to the gallery, so you can see why a result looks the way it does.",
        source_mask: "White: the subject in the source images. Upload a mask or draw on it.",
        target_mask: "White: the subject in the target images. Upload a mask or draw on it.",
        follow_inversion: "The source rows retrace the init image's inversion step by step, so the targets borrow from the photo itself and the reconstruction is the photo. Off: the source is denoised freely from the inverted noise.",
        layout: "pairs: the first half of the batch are sources, each with one target. one source: image 1 is the source of every other image, and every batch repeats it, so all targets share one character.",
        target_prompts: "One prompt per target, in order over all batches, or one line for all targets. Empty: the main prompt.",
        show_every_source: "With one source: show and save the source in every batch, not only in the first.",
        control_maps: "Already preprocessed control maps (pose, depth, canny...), one per target in order; they replace the image of the ControlNet unit chosen beside them, which keeps its weight, guidance and control mode.",
        control_maps_folder: "A folder of control maps instead of uploads, taken in file name order (for the API and long sequences).",
        control_maps_unit: "Which enabled ControlNet unit the maps go to, counted from 1 in tab order.",
        animation: "With one source: put the targets together in an animated file, added to the gallery and saved beside the images.",
        fps: "Frames per second of the animation.",
    };
    // Where a control means something else with one source.
    const oneSourceTooltips = {
        enabled: "Pair the batch: image 1 is the source, every other image a target that keeps its subject and textures.",
        source_prompt: "Prompt of the source image (image 1 of every batch). Empty: the main prompt.",
    };
    // Where a control means something else on img2img.
    const img2imgTooltips = {
        source_prompt: "Prompt of the source images. With 'Invert the init image' on: what the init image shows, used to invert and reconstruct it; empty: no prompt (the paper). With it off: empty means the main prompt.",
    };

    // The titles this script set, so that a layout change replaces them but no other title.
    const ours = new Map();

    function texts(tab, layout) {
        const layoutTexts = layout === "one source" ? oneSourceTooltips : {};
        return tab === "img2img" ? {...tooltips, ...layoutTexts, ...img2imgTooltips} : {...tooltips, ...layoutTexts};
    }

    function setTitles(tab, layout) {
        for (const [name, text] of Object.entries(texts(tab, layout))) {
            const element = gradioApp().getElementById(`script_${tab}_masactrl_${name}`);
            // The enable switch is the accordion's header: a title on the whole accordion would
            // show over every control inside it.
            const target = element && (element.querySelector(".label-wrap") || element);
            if (target && (!target.title || ours.get(target) === target.title)) {
                target.title = text;
                ours.set(target, text);
            }
        }
    }

    function attach() {
        for (const tab of ["txt2img", "img2img"]) {
            setTitles(tab, "pairs");
            const layout = gradioApp().getElementById(`script_${tab}_masactrl_layout`);
            if (layout && layout.addEventListener) {
                layout.addEventListener("change", (event) => setTitles(tab, event.target.value));
            }
        }
    }

    // The layer sliders' range is the loaded model's (16 layers on SD1/SD2, 70 on SDXL): ask the
    // hidden refresh buttons for it whenever the checkpoint changes, and once the UI has options.
    let checkpoint = null;

    function followCheckpoint() {
        const current = opts.sd_model_checkpoint;
        if (current === checkpoint) {
            return;
        }
        checkpoint = current;
        for (const tab of ["txt2img", "img2img"]) {
            const button = gradioApp().getElementById(`script_${tab}_masactrl_refresh_layers`);
            if (button) {
                button.click();
            }
        }
    }

    onUiLoaded(attach);
    onOptionsChanged(followCheckpoint);
})();
