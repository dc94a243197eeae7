"""txt2img pairs, the extension's first promise: the sources are what the WebUI makes without
MasaCtrl, the targets are changed by it, and every image's infotext tells what made it."""

from __future__ import annotations

from realhost.webui_api import (
    SEED,
    SOURCE_PROMPT,
    TARGET_PROMPT,
    Generation,
    assert_close,
    assert_different,
    infotext_prompt,
    infotext_values,
    masactrl_settings,
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
