// Tooltips for the MasaCtrl accordion, attached by element id once the UI exists.
(function () {
    const tooltips = {
        enabled: "Pair the batch: the first half are sources, the second half targets that keep their source's subject and textures.",
        source_prompt: "Prompt of the source images (the first half of the batch). Empty: the main prompt.",
        mode: "mutual: targets read only their source's features (the paper). union: their source's and their own.",
        start_step: "First sampling step (counted from 0) with control. Earlier steps let the target find its own layout.",
        end_step: "Control stops before this step. Values past the last step mean: until the end.",
        start_layer: "First U-Net transformer layer with control. -1: the model's default (10 of 16 on SD1/SD2, 44 of 70 on SDXL).",
        end_layer: "Control stops before this layer. Values past the last layer mean: through the last layer.",
        hires: "Also control the hires fix second pass. Sources and targets stay paired either way.",
    };

    function attach() {
        for (const tab of ["txt2img", "img2img"]) {
            for (const [name, text] of Object.entries(tooltips)) {
                const element = gradioApp().getElementById(`script_${tab}_masactrl_${name}`);
                if (element && !element.title) {
                    element.title = text;
                }
            }
        }
    }

    onUiLoaded(attach);
})();
