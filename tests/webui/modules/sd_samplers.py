"""Stand-in for the WebUI's modules/sd_samplers.py: the sampler list (the k-diffusion samplers with
Restart last, then the timestep samplers DDIM, DDIM CFG++, PLMS and UniPC, then LCM, in the real
order), create_sampler, and the lookups that turn infotext and API names into a sampler and schedule
type."""

from __future__ import annotations

import functools
import logging

from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_lcm, sd_samplers_timesteps, sd_schedulers, shared

# the three sampler families' entries, in the real list's order
all_samplers = (
    sd_samplers_kdiffusion.samplers_data_k_diffusion
    + sd_samplers_timesteps.samplers_data_timesteps
    + sd_samplers_lcm.samplers_data_lcm
)
all_samplers_map = {entry.name: entry for entry in all_samplers}


def find_sampler_config(name):
    """sd_samplers.find_sampler_config: the entry of that name (None if unknown); no name: the first."""
    return all_samplers[0] if name is None else all_samplers_map.get(name)


def create_sampler(name, model):
    """sd_samplers.create_sampler: a new sampler object for one sampling pass, its ``config`` set."""
    config = find_sampler_config(name)
    assert config is not None, f"bad sampler name: {name}"
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def set_samplers():
    """sd_samplers.set_samplers, also run at import: the lists the UI offers (``samplers``,
    ``samplers_for_img2img``), ``samplers_map`` from lower-case names and aliases to names, and the
    names hidden by the hide_samplers setting."""
    global samplers, samplers_for_img2img, samplers_hidden, samplers_map
    samplers = samplers_for_img2img = all_samplers
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers_map = {key.lower(): entry.name for entry in all_samplers for key in (entry.name, *entry.aliases)}


def visible_samplers():
    """sd_samplers.visible_samplers: the offered entries less those hidden by the hide_samplers setting."""
    return [sampler for sampler in samplers if sampler.name not in samplers_hidden]


def visible_sampler_names():
    """sd_samplers.visible_sampler_names: the names of visible_samplers()."""
    return [sampler.name for sampler in visible_samplers()]


@functools.cache
def get_sampler_and_scheduler(sampler_name, scheduler_name, *, convert_automatic=True):
    """sd_samplers.get_sampler_and_scheduler: (sampler name, schedule type label) for names as infotexts
    and API requests give them. Unknown samplers become the first one; an old-style name with a schedule
    suffix ("DPM++ 2M Karras") is split; and, with ``convert_automatic``, a schedule type that is the
    sampler's own default is reported as "Automatic"."""
    default = samplers[0]
    scheduler = sd_schedulers.schedulers_map.get(scheduler_name, sd_schedulers.schedulers[0])
    name = sampler_name or default.name
    for candidate in sd_schedulers.schedulers:
        suffix = next((s for s in (candidate.label, candidate.name, *(candidate.aliases or [])) if name.endswith(" " + s)), None)
        if suffix is not None:
            scheduler, name = candidate, name[: -len(suffix) - 1]
    sampler = all_samplers_map.get(name, default)
    if convert_automatic and sampler.options.get("scheduler") == scheduler.name:
        scheduler = sd_schedulers.schedulers[0]
    return sampler.name, scheduler.label


def get_sampler_from_infotext(d: dict):
    """sd_samplers.get_sampler_from_infotext: the paste-field reader of the Sampler dropdown."""
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict):
    """sd_samplers.get_scheduler_from_infotext: the paste-field reader of the Schedule type dropdown."""
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]


def get_hr_sampler_and_scheduler(d: dict):
    """sd_samplers.get_hr_sampler_and_scheduler: the hires pass's sampler and schedule type from an
    infotext, each "Use same ..." when it is the first pass's."""
    same_sampler, same_scheduler = "Use same sampler", "Use same scheduler"
    hr_sampler, hr_scheduler = d.get("Hires sampler", same_sampler), d.get("Hires schedule type", same_scheduler)
    sampler, scheduler = get_sampler_and_scheduler(
        d.get("Sampler") if hr_sampler == same_sampler else hr_sampler,
        d.get("Schedule type") if hr_scheduler == same_scheduler else hr_scheduler,
    )
    return (
        same_sampler if sampler == d.get("Sampler") else sampler,
        same_scheduler if scheduler == d.get("Schedule type") else scheduler,
    )


def get_hr_sampler_from_infotext(d: dict):
    """sd_samplers.get_hr_sampler_from_infotext: the paste-field reader of the Hires sampler dropdown."""
    return get_hr_sampler_and_scheduler(d)[0]


def get_hr_scheduler_from_infotext(d: dict):
    """sd_samplers.get_hr_scheduler_from_infotext: the paste-field reader of the Hires schedule type dropdown."""
    return get_hr_sampler_and_scheduler(d)[1]


def fix_p_invalid_sampler_and_scheduler(p):
    """sd_samplers.fix_p_invalid_sampler_and_scheduler: replace unknown or old-style names on ``p`` (the
    schedule type kept as given), with a warning in the log."""
    before = p.sampler_name, p.scheduler
    p.sampler_name, p.scheduler = get_sampler_and_scheduler(*before, convert_automatic=False)
    if (p.sampler_name, p.scheduler) != before:
        changes = f'"{before[0]}" -> "{p.sampler_name}", "{before[1]}" -> "{p.scheduler}"'
        logging.warning(f"Sampler Scheduler autocorrection: {changes}")


set_samplers()


# the real module keeps these names for extensions that imported them from here
samples_to_image_grid = sd_samplers_common.samples_to_image_grid
sample_to_image = sd_samplers_common.sample_to_image
