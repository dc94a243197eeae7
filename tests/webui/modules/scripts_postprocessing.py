"""Stand-in for modules/scripts_postprocessing.py, reduced to the base class of Extras-tab scripts.

The stand-in has no Extras tab: ``scripts.load_scripts`` only sorts such classes into
``scripts.postprocessing_scripts_data`` as the real loader does, and nothing runs them."""


class ScriptPostprocessing:
    """scripts_postprocessing.py ScriptPostprocessing: what marks a class in a script file as an
    Extras-tab operation rather than a txt2img/img2img Script."""

    name = None
    order = 1000

    def ui(self):
        """The operation's components, as a dict of argument name -> component."""

    def process(self, pp, **args):
        """Apply the operation to one image (``pp.image``)."""
