"""Script arguments: positional (UI/API order) or dict, validated with messages naming the value."""

import pytest

from lib_masactrl import SettingsError
from lib_masactrl.fields import FIELDS, ScriptArgs, parse_args
from lib_masactrl.session import pair_prompts, share_seeds


def test_api_order_is_the_field_table_order():
    assert [field.name for field in FIELDS] == [
        "enabled", "source_prompt", "mode", "start_step", "end_step", "start_layer", "end_layer", "hires",
        "controlnet", "controlnet_units", "invert", "inversion_cfg", "show_reconstruction", "mask_mode", "mask_words",
        "mask_target_words", "mask_threshold", "show_masks", "source_mask", "target_mask", "follow_inversion",
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
        ([True] * 22, "MasaCtrl takes at most 21 arguments"),
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
    assert pair_prompts(prompts, 4, "s") == ["s", "s", "t", "t", "s", "s", "t", "t"]
    assert pair_prompts(prompts, 4, "") == prompts
    assert share_seeds([10, 11, 12, 13, 20, 21, 22, 23], 4) == [10, 11, 10, 11, 20, 21, 20, 21]


def test_controlnet_assignments_for_all_units_or_per_unit():
    from lib_masactrl import Assignment

    assert parse_args([True]).controlnet_assignments() is Assignment.TARGET
    assert parse_args({"enabled": True, "controlnet": "both"}).controlnet_assignments() is Assignment.BOTH
    per_unit = parse_args({"enabled": True, "controlnet": "per unit", "controlnet_units": "Source, target ,both"})
    assert per_unit.controlnet_assignments() == (Assignment.SOURCE, Assignment.TARGET, Assignment.BOTH)
