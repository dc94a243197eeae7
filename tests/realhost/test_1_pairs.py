"""txt2img pairs, the extension's first promise: the sources are what the WebUI makes without
MasaCtrl, the targets are changed by it, and every image's infotext tells what made it; with a
refiner too."""

from __future__ import annotations

from realhost.webui_api import (
    CONTROLLED,
    SEED,
    SOURCE_PROMPT,
    TARGET_PROMPT,
    Generation,
    WebUI,
    assert_close,
    assert_different,
    infotext_prompt,
    infotext_values,
    masactrl_args,
    masactrl_settings,
    mean_difference,
    payload,
)


def test_the_source_is_the_plain_image_of_its_prompt_and_seed(mutual_pairs: Generation, plain_before: Generation) -> None:
    """Image 1 of a plain batch of two with the source prompt has the source's prompt, seed and
    batch shape: MasaCtrl must leave it as it is."""
    assert len(mutual_pairs.images) == 2, "a pair is two images and nothing else"
    assert_close(mutual_pairs.rgb(0), plain_before.rgb(0), "source vs the plain run")


def test_the_target_differs_from_its_plain_counterpart(mutual_pairs: Generation, plain_targets: Generation) -> None:
    """The target has the main prompt and the source's seed: a plain run of that prompt shows what
    it would be without control."""
    assert_different(mutual_pairs.rgb(1), plain_targets.rgb(0), "target vs the plain run of its prompt and seed")


def test_each_infotext_holds_its_own_prompt_and_seed_and_the_settings(mutual_pairs: Generation) -> None:
    """Pasting either image's parameters must remake the pair: prompts, the shared seed, and the
    MasaCtrl settings as used."""
    source, target = mutual_pairs.infotexts[:2]
    assert infotext_prompt(source) == SOURCE_PROMPT
    assert infotext_prompt(target) == TARGET_PROMPT
    for text in (source, target):
        assert infotext_values(text)["Seed"] == str(SEED)
        settings = masactrl_settings(text)
        assert (settings["enabled"], settings["source_prompt"], settings["start_step"], settings["start_layer"]) == (
            "True", SOURCE_PROMPT, "0", "0")


def test_strength_zero_is_the_plain_target_and_a_half_lies_between(webui: WebUI, mutual_pairs: Generation,
                                                                   plain_targets: Generation,
                                                                   plain_before: Generation) -> None:
    """Strength blends each target's controlled self-attention with its own: 0 takes nothing from
    the source, 1 (the default) is the paper's control; the source stays the plain image either way."""
    zero, half = (webui.generate(payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, strength=strength,
                                                                **CONTROLLED))) for strength in (0.0, 0.5))
    for result in (zero, half):
        assert_close(result.rgb(0), plain_before.rgb(0), "source vs the plain run")
    assert_close(zero.rgb(1), plain_targets.rgb(0), "the target at strength 0 vs the plain run of its prompt and seed")
    halfway = mean_difference(half.rgb(1), plain_targets.rgb(0))
    assert 0 < halfway < mean_difference(mutual_pairs.rgb(1), plain_targets.rgb(0))
    assert masactrl_settings(half.infotexts[1])["strength"] == "0.5"


def test_masactrl_follows_a_refiner_and_the_source_stays_plain(webui: WebUI, refiner: str) -> None:
    """The refiner takes over after the first step and control starts at step 2, so every
    controlled step runs on the refiner's U-Net. MasaCtrl says it follows the new model, and it
    would say that attention never ran through it if it had not; the target moves away from its
    uncontrolled twin (strength 0) by as much as the refiner's attention allows (the lab's plain
    random checkpoint barely shows attention effects), the source not at all."""
    made = [webui.generate(payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, start_step=2, start_layer=0,
                                                          strength=strength),
                                   refiner_checkpoint=refiner, refiner_switch_at=0.25)) for strength in (1.0, 0.0)]
    controlled, uncontrolled = made
    assert_close(controlled.rgb(0), uncontrolled.rgb(0), "source with MasaCtrl vs without (strength 0), refined")
    assert mean_difference(controlled.rgb(1), uncontrolled.rgb(1)) > 0, "the refined target was not controlled"
    values = infotext_values(controlled.infotexts[1])
    assert values.get("Refiner", "").startswith(refiner)
    notes = values.get("MasaCtrl notes", "")
    assert "follows the new model" in notes and "never ran through MasaCtrl" not in notes, notes
