"""Mirrors modules/scripts_postprocessing.py, simplified to the classes extensions subclass or use
(the Extras tab runner is a stub: the stand-in has no Extras tab)."""

import dataclasses


@dataclasses.dataclass
class PostprocessedImageSharedInfo:
    target_width: int = None
    target_height: int = None


class PostprocessedImage:
    # mirrors scripts_postprocessing.PostprocessedImage (without suffix handling)
    def __init__(self, image):
        self.image = image
        self.info = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images = []
        self.nametags = []
        self.disable_processing = False
        self.caption = None


class ScriptPostprocessing:
    # mirrors scripts_postprocessing.ScriptPostprocessing (the base class of Extras-tab scripts)
    filename = None
    controls = None
    args_from = None
    args_to = None
    order = 1000
    name = None
    group = None

    def ui(self):
        pass

    def process(self, pp: PostprocessedImage, **args):
        pass

    def process_firstpass(self, pp: PostprocessedImage, **args):
        pass

    def image_changed(self):
        pass


class ScriptPostprocessingRunner:
    # simplified stub of scripts_postprocessing.ScriptPostprocessingRunner
    def __init__(self):
        self.scripts = None
        self.ui_created = False
