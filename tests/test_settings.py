"""Settings validation: every bad value is refused with a message naming it and the allowed range."""

import pytest

from lib_masactrl import MasaCtrlSettings, Mode, SettingsError, default_start_layer


def test_defaults_follow_the_paper():
    settings = MasaCtrlSettings()
    assert settings.mode is Mode.MUTUAL
    schedule = settings.schedule(16, total_steps=50, model_name="this SD1.x model")
    assert schedule.steps == range(4, 50)
    assert schedule.layers == frozenset(range(10, 16))


def test_end_step_and_end_layer_are_exclusive():
    schedule = MasaCtrlSettings(start_step=2, end_step=5, start_layer=3, end_layer=6).schedule(16, total_steps=20)
    assert list(schedule.steps) == [2, 3, 4]
    assert sorted(schedule.layers) == [3, 4, 5]


def test_end_step_beyond_the_step_count_stops_at_the_last_step():
    assert MasaCtrlSettings(start_step=1, end_step=100).schedule(16, total_steps=5).steps == range(1, 5)


def test_end_layer_beyond_the_model_means_the_last_layer():
    assert MasaCtrlSettings(start_layer=12, end_layer=70).schedule(16).layers == frozenset(range(12, 16))


@pytest.mark.parametrize("layer_count, start", [(16, 10), (70, 44), (4, 2), (1, 0)])
def test_the_automatic_start_layer_is_five_eighths_of_the_depth(layer_count, start):
    assert default_start_layer(layer_count) == start
    assert min(MasaCtrlSettings().schedule(layer_count).layers) == start


def test_explicit_layer_list_replaces_the_range():
    settings = MasaCtrlSettings(layers=[12, 3, 3])
    assert settings.layers == (3, 12)
    assert settings.schedule(16).layers == frozenset({3, 12})


def test_mode_accepts_names():
    assert MasaCtrlSettings(mode="Union").mode is Mode.UNION


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "masked"}, "mode 'masked' is not known: use one of mutual, union"),
        ({"start_step": -1}, "start step must not be negative, got -1"),
        ({"start_layer": "ten"}, "start layer must be a whole number, got 'ten'"),
        ({"start_step": True}, "start step must be a whole number, got True"),
        ({"start_step": 5, "end_step": 5}, "end step 5 must be after start step 5 (the end step is exclusive)"),
        ({"start_layer": 9, "end_layer": 3}, "end layer 3 must be after start layer 9 (the end layer is exclusive)"),
        ({"layers": []}, "the explicit layer list is empty"),
        ({"layers": "1,2"}, "layers must be a list of whole numbers"),
    ],
)
def test_bad_values_are_refused_on_construction(kwargs, message):
    with pytest.raises(SettingsError) as error:
        MasaCtrlSettings(**kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "kwargs, layer_count, steps, message",
    [
        ({"start_layer": 20}, 16, None, "start layer 20 is out of range: this SD1.x model has layers 0-15"),
        ({"start_layer": 15, "end_layer": 15}, 16, None, "end layer 15 must be after start layer 15"),
        ({"layers": [3, 70]}, 70, None, "layer 70 is out of range: this SD1.x model has layers 0-69"),
        ({"start_step": 30}, 16, 30, "start step 30 is out of range: this generation has steps 0-29"),
    ],
)
def test_values_out_of_range_for_the_model_name_the_range(kwargs, layer_count, steps, message):
    with pytest.raises(SettingsError) as error:
        MasaCtrlSettings(**kwargs).schedule(layer_count, total_steps=steps, model_name="this SD1.x model")
    assert message in str(error.value)


def test_floats_with_whole_values_are_accepted_as_from_a_slider():
    assert MasaCtrlSettings(start_step=3.0).start_step == 3
