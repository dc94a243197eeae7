"""Mirrors modules/extra_networks.py: <name:args> tags in prompts.

Simplified: no extra networks (LoRA, hypernet...) are registered; tags are still parsed out of the
prompts as the real parse_prompts does, and activate/deactivate report unknown networks the same way."""

import logging
import re
from collections import defaultdict

from modules import errors

extra_network_registry = {}
extra_network_aliases = {}


class ExtraNetworkParams:
    # mirrors extra_networks.ExtraNetworkParams
    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return self.items == other.items


class ExtraNetwork:
    # mirrors extra_networks.ExtraNetwork (base class)
    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network


def lookup_extra_networks(extra_network_data):
    # mirrors extra_networks.lookup_extra_networks
    result = {}
    for name, params in list(extra_network_data.items()):
        network = extra_network_registry.get(name, None)
        alias = extra_network_aliases.get(name, None)
        if alias is not None and network is None:
            network = alias
        if network is None:
            logging.info(f"Skipping unknown extra network: {name}")
            continue
        result.setdefault(network, []).extend(params)
    return result


def activate(p, extra_network_data):
    # mirrors extra_networks.activate: named networks first, then every other registered one with []
    activated = []
    for network, args in lookup_extra_networks(extra_network_data).items():
        try:
            network.activate(p, args)
            activated.append(network)
        except Exception as e:
            errors.display(e, f"activating extra network {network.name} with arguments {args}")
    for name, network in extra_network_registry.items():
        if network in activated:
            continue
        try:
            network.activate(p, [])
        except Exception as e:
            errors.display(e, f"activating extra network {name}")
    if p.scripts is not None:
        p.scripts.after_extra_networks_activate(
            p,
            batch_number=p.iteration,
            prompts=p.prompts,
            seeds=p.seeds,
            subseeds=p.subseeds,
            extra_network_data=extra_network_data,
        )


def deactivate(p, extra_network_data):
    # mirrors extra_networks.deactivate
    data = lookup_extra_networks(extra_network_data)
    for network in data:
        try:
            network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating extra network {network.name}")
    for name, network in extra_network_registry.items():
        if network in data:
            continue
        try:
            network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating unmentioned extra network {name}")


re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    # mirrors extra_networks.parse_prompt: removes the tags, collecting their ":"-separated arguments
    found = defaultdict(list)

    def collect(m):
        found[m.group(1)].append(ExtraNetworkParams(items=m.group(2).split(":")))
        return ""

    return re.sub(re_extra_net, collect, prompt), found


def parse_prompts(prompts):
    # mirrors extra_networks.parse_prompts: the extra-network data comes from the first prompt only
    result = []
    extra_data = None
    for prompt in prompts:
        updated, parsed = parse_prompt(prompt)
        if extra_data is None:
            extra_data = parsed
        result.append(updated)
    return result, extra_data
