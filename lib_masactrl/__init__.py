"""MasaCtrl engine: mutual self-attention control for ldm/sgm U-Nets.

Host-independent: it imports torch and numpy only, never the WebUI's ``modules``, and
importing it changes nothing. A host builds :class:`MasaCtrlSettings`, calls :func:`attach` on
its U-Net, reports each denoiser call with :meth:`MasaCtrlController.begin_step`, and detaches.
"""

from .controller import ControlStats, MasaCtrlController
from .controlnet_rows import Assignment, UnitRestriction, release_units, restrict_units
from .inversion import InversionInterrupted, classifier_free, invert
from .inversion_cache import InversionCache, InversionKey, invert_cached, tensor_digest
from .layers import Layer, LayerMap
from .layout import COND, UNCOND, CallPlan, LayoutError, Row, StepLayout
from .masks import MaskGuide, UsedMasks, mask_guide
from .pairing import Pairing, pair_halves
from .patching import Attachment, attach, detach_all, stop_on_next_call
from .settings import (
    DEFAULT_MASK_THRESHOLD,
    DEFAULT_START_STEP,
    MasaCtrlSettings,
    Mode,
    Schedule,
    SettingsError,
    default_start_layer,
)
from .steps import PassSteps
from .words import subprompt_positions, word_positions

__all__ = [
    "InversionCache",
    "InversionInterrupted",
    "InversionKey",
    "classifier_free",
    "invert",
    "invert_cached",
    "tensor_digest",
    "Assignment",
    "UnitRestriction",
    "release_units",
    "restrict_units",
    "COND",
    "UNCOND",
    "Attachment",
    "CallPlan",
    "ControlStats",
    "DEFAULT_MASK_THRESHOLD",
    "DEFAULT_START_STEP",
    "MaskGuide",
    "UsedMasks",
    "mask_guide",
    "subprompt_positions",
    "word_positions",
    "Layer",
    "LayerMap",
    "LayoutError",
    "MasaCtrlController",
    "MasaCtrlSettings",
    "Mode",
    "Row",
    "Schedule",
    "SettingsError",
    "StepLayout",
    "attach",
    "default_start_layer",
    "detach_all",
    "Pairing",
    "PassSteps",
    "pair_halves",
    "stop_on_next_call",
]
