"""Stand-in for the WebUI's modules/extra_networks.py: ``<name:arg1:arg2>`` tags in prompts. Processing
takes them out of the prompts (``parse_prompts``) and activates the registered extra networks with their
arguments for each batch (``activate``), then deactivates them at the end.

No extra network (LoRA, hypernetwork...) is registered in the stand-in host, so tags are removed from
the prompts and reported as unknown; the registry logic is kept for an extension that registers one.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict

from modules import errors

extra_network_registry: dict = {}
"""name -> extra network object (``activate(p, params_list)``, ``deactivate(p)``)."""
extra_network_aliases: dict = {}

_TAG = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """Mirrors extra_networks.ExtraNetworkParams: one tag's ``:``-separated arguments, split into
    positional ones and ``key=value`` ones. Equal when the arguments are (processing's cond cache
    compares them)."""

    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            key, equals, value = item.partition("=") if isinstance(item, str) else (item, "", "")
            if equals and "=" not in value:
                self.named[key] = value
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return self.items == other.items


def lookup_extra_networks(extra_network_data):
    """Mirrors extra_networks.lookup_extra_networks: {network object: all its params} for the tag names
    that name a registered network (or an alias); other names are logged and skipped."""
    found: dict = {}
    for name, params in extra_network_data.items():
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            logging.info(f"Skipping unknown extra network: {name}")
            continue
        found.setdefault(network, []).extend(params)
    return found


def _reported(action, what: str) -> bool:
    """Runs ``action``; an exception is reported (as the real host does), not raised. True if it ran."""
    try:
        action()
    except Exception as e:
        errors.display(e, what)
        return False
    return True


def activate(p, extra_network_data):
    """Mirrors extra_networks.activate: the networks the prompt names get their params, every other
    registered one (and a named one that failed) gets ``[]``, so it can switch itself off. Then the
    scripts' ``after_extra_networks_activate``."""
    named = lookup_extra_networks(extra_network_data)
    done = set()
    for network, params in named.items():
        what = f"activating extra network {network.name} with arguments {params}"
        if _reported(functools.partial(network.activate, p, params), what):
            done.add(network)
    for name, network in extra_network_registry.items():
        if network not in done:
            _reported(functools.partial(network.activate, p, []), f"activating extra network {name}")
    if p.scripts is not None:
        batch = {"prompts": p.prompts, "seeds": p.seeds, "subseeds": p.subseeds}
        p.scripts.after_extra_networks_activate(p, batch_number=p.iteration, extra_network_data=extra_network_data, **batch)


def deactivate(p, extra_network_data):
    """Mirrors extra_networks.deactivate: every named and every registered network is deactivated once."""
    named = lookup_extra_networks(extra_network_data)
    for network in list(named) + [network for network in extra_network_registry.values() if network not in named]:
        _reported(functools.partial(network.deactivate, p), f"deactivating extra network {network.name}")


def parse_prompt(prompt):
    """Mirrors extra_networks.parse_prompt: the prompt without its tags, and {name: [params, ...]}."""
    found = defaultdict(list)
    for tag in _TAG.finditer(prompt):
        found[tag.group(1)].append(ExtraNetworkParams(items=tag.group(2).split(":")))
    return _TAG.sub("", prompt), found


def parse_prompts(prompts):
    """Mirrors extra_networks.parse_prompts: every prompt without its tags; the networks are the first
    prompt's (the real host applies one set of networks to the whole batch)."""
    parsed = [parse_prompt(prompt) for prompt in prompts]
    return [text for text, _ in parsed], (parsed[0][1] if parsed else None)
