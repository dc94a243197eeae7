"""Mirrors modules/scripts_auto_postprocessing.py: wraps Extras-tab scripts named in
opts.postprocessing_enable_in_main_ui as alwayson txt2img/img2img scripts."""

from modules import scripts, scripts_postprocessing, shared


class ScriptPostprocessingForMainUI(scripts.Script):
    # mirrors scripts_auto_postprocessing.ScriptPostprocessingForMainUI
    def __init__(self, script_postproc):
        self.script = script_postproc
        self.postprocessing_controls = None

    def title(self):
        return self.script.name

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        self.postprocessing_controls = self.script.ui()
        return self.postprocessing_controls.values()

    def postprocess_image(self, p, script_pp, *args):
        pp = scripts_postprocessing.PostprocessedImage(script_pp.image)
        pp.info = {}
        self.script.process(pp, **dict(zip(self.postprocessing_controls, args)))
        p.extra_generation_params.update(pp.info)
        script_pp.image = pp.image


def create_auto_preprocessing_script_data():
    # mirrors scripts_auto_postprocessing.create_auto_preprocessing_script_data
    result = []
    for name in shared.opts.postprocessing_enable_in_main_ui:
        found = [x for x in scripts.postprocessing_scripts_data if x.script_class.name == name]
        if not found:
            continue
        data = found[0]
        result.append(
            scripts.ScriptClassData(
                script_class=lambda s=data: ScriptPostprocessingForMainUI(s.script_class()),
                path=data.path,
                basedir=data.basedir,
                module=data.module,
            )
        )
    return result
