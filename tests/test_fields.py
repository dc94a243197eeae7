"""Script arguments: positional (UI/API order) or dict, validated with messages naming the value."""

import pytest

from lib_masactrl import SettingsError
from lib_masactrl.fields import FIELDS, ScriptArgs, parse_args
from lib_masactrl.pairing import Pairing
from lib_masactrl.session import pair_prompts


def test_api_order_is_the_field_table_order():
    assert [field.name for field in FIELDS] == [
        "enabled", "source_prompt", "mode", "start_step", "end_step", "start_layer", "end_layer", "hires",
        "controlnet", "controlnet_units", "invert", "inversion_cfg", "show_reconstruction", "mask_mode", "mask_words",
        "mask_target_words", "mask_threshold", "show_masks", "source_mask", "target_mask", "follow_inversion",
        "layout", "target_prompts", "show_every_source", "control_maps", "control_maps_folder", "control_maps_unit",
        "animation", "fps", "strength",
    ]


def test_positional_args_with_missing_trailing_values_take_defaults():
    assert parse_args([True, "a cat", "union", 5]) == ScriptArgs(enabled=True, source_prompt="a cat", mode="union", start_step=5)


def test_slider_floats_and_infotext_strings_are_accepted():
    args = parse_args([True, "", "mutual", 4.0, "20", "-1", 70.0, "False"])
    assert (args.start_step, args.end_step, args.start_layer, args.hires) == (4, 20, -1, False)


def test_dict_args_by_field_name_or_infotext_key_alone_or_first():
    expected = ScriptArgs(enabled=True, mode="union", start_layer=12)
    assert parse_args({"enabled": True, "mode": "union", "start_layer": 12}) == expected
    assert parse_args([{"MasaCtrl": True, "MasaCtrl mode": "union", "MasaCtrl start layer": 12}, "", "mutual"]) == expected


def test_disabled_ignores_the_other_values():
    assert parse_args([False, 3, "nonsense", -7]) == ScriptArgs()


@pytest.mark.parametrize(
    "args, message",
    [
        ([True, "", "blend"], "mode 'blend' is not known: use one of mutual, union"),
        ([True, "", "mutual", 3.5], "start step must be a whole number, got 3.5"),
        ([True, "", "mutual", 4, 0], "end step 0 is out of range: allowed are 1 to 150"),
        ([True, "", "mutual", 4, 150, 70], "start layer 70 is out of range: allowed are -1 to 69"),
        ([True, 5], "source prompt must be text, got 5"),
        (["yes"], "enabled must be true or false, got 'yes'"),
        ([{"enabled": True, "start": 3}], "unknown MasaCtrl argument 'start'"),
        ([True] * 31, "MasaCtrl takes at most 30 arguments"),
        ({"enabled": True, "mask_mode": "words"}, "mask mode 'words' is not known: use one of none, subject words"),
        ({"enabled": True, "mask_mode": "subject words"}, "need at least one source subject word"),
        ({"enabled": True, "mask_mode": "uploaded masks", "source_mask": 1}, "need both a source mask and a target mask"),
        ({"enabled": True, "mask_threshold": 1.5}, "mask threshold 1.5 is out of range"),
        ([True, "", "mutual", 4, 150, -1, 70, False, "sources"], "ControlNet units apply to 'sources' is not known"),
        ([True, "", "mutual", 4, 150, -1, 70, False, "per unit", ""], "list source, target or both for each enabled unit"),
        ([True, "", "mutual", 4, 150, -1, 70, False, "per unit", "source, tgt"], "assignment 'tgt' is not known"),
        ({"enabled": True, "inversion_cfg": 0.5}, "inversion CFG scale 0.5 is out of range: allowed are 1.0 to 30.0"),
        ({"enabled": True, "inversion_cfg": "x"}, "inversion CFG scale must be a number, got 'x'"),
    ],
)
def test_bad_args_are_refused_with_a_clear_message(args, message):
    with pytest.raises(SettingsError) as error:
        parse_args(args)
    assert message in str(error.value)


def test_infotext_omits_defaults_but_keeps_the_switch_and_the_resolved_start_layer():
    args = ScriptArgs(enabled=True, source_prompt="a dog, sitting", start_step=6)
    assert args.infotext(resolved_start_layer=10) == {
        "MasaCtrl": True,
        "MasaCtrl source prompt": "a dog, sitting",
        "MasaCtrl start step": 6,
        "MasaCtrl start layer": 10,
    }


def test_sources_get_the_source_prompt_and_targets_share_their_source_seed():
    prompts = ["t"] * 8
    pairs = Pairing.halves(4)
    assert pair_prompts(prompts, pairs, "s") == ["s", "s", "t", "t", "s", "s", "t", "t"]
    assert pair_prompts(prompts, pairs, "") == prompts
    assert pair_prompts(prompts, pairs, "", empty_is_main=False) == ["", "", "t", "t", "", "", "t", "t"]
    assert pairs.seeds([10, 11, 12, 13, 20, 21, 22, 23]) == [10, 11, 10, 11, 20, 21, 20, 21]


def test_one_source_repeats_its_source_and_numbers_the_targets_over_the_generation():
    sequence = Pairing.of("one source", 4)
    assert sequence.reads_from == (None, 0, 0, 0) and sequence.sources == [0] and sequence.targets == [1, 2, 3]
    assert [sequence.target_number(i) for i in range(8)] == [None, 0, 1, 2, None, 3, 4, 5]
    assert sequence.seeds([10, 11, 12, 13, 20, 21, 22, 23]) == [10] * 8
    lines = ["walk 1", "walk 2", "walk 3", "walk 4", "walk 5", "walk 6"]
    assert pair_prompts(["t"] * 8, sequence, "s", lines) == ["s", *lines[:3], "s", *lines[3:]]
    assert pair_prompts(["t"] * 8, sequence, "", ["run"]) == ["t", "run", "run", "run", "t", "run", "run", "run"]
    with pytest.raises(SettingsError, match="4 target prompts were given for the 6 targets of this generation"):
        pair_prompts(["t"] * 8, sequence, "s", lines[:4])
    assert sequence.shown(0, every_source=False) == [0, 1, 2, 3] and sequence.shown(1, every_source=False) == [1, 2, 3]
    assert sequence.shown(1, every_source=True) == [0, 1, 2, 3] and Pairing.halves(4).shown(1, False) == [0, 1, 2, 3]
    with pytest.raises(Exception, match="needs a batch size of at least 2"):
        Pairing.of("one source", 1)


def test_controlnet_assignments_for_all_units_or_per_unit():
    from lib_masactrl import Assignment

    assert parse_args([True]).controlnet_assignments() is Assignment.TARGET
    assert parse_args({"enabled": True, "controlnet": "both"}).controlnet_assignments() is Assignment.BOTH
    per_unit = parse_args({"enabled": True, "controlnet": "per unit", "controlnet_units": "Source, target ,both"})
    assert per_unit.controlnet_assignments() == (Assignment.SOURCE, Assignment.TARGET, Assignment.BOTH)
