"""Whole generations in a running WebUI (A1111 or Forge), MasaCtrl against plain, through its API.

The other benchmarks time the engine on test U-Nets; this one times what a user waits for in a real
host, with that host's own attention kernel, sampler and model: a txt2img batch of one pair without
MasaCtrl, and the same batch with MasaCtrl in each mode. Requests take turns (plain, then each mode, and
back in reverse order) so that drift and order hit all alike; it prints the median seconds and the ratio to plain, and
which host and model answered. Start the WebUI with ``--api`` first.

    python benchmarks/host_generation.py --url http://127.0.0.1:7861 --size 64 --steps 4 --repeats 5
    python benchmarks/host_generation.py --url http://gpu-host:7860 --size 512 --steps 20   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
import urllib.request
from typing import Any, Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_masactrl.fields import FIELDS  # noqa: E402

SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"
MODES = {
    "mutual": {},
    "union": {"mode": "union"},
    "word masks": {"mask_mode": "subject words", "mask_words": "corgi"},
    "strength 0.5": {"strength": 0.5},
}


def masactrl_args(**values: Any) -> List[Any]:
    """The accordion's values in order: on, with the source prompt, from the first step and layer."""
    changed = {"enabled": True, "source_prompt": SOURCE, "start_step": 0, "start_layer": 0, **values}
    return [changed.get(field.name, field.default) for field in FIELDS]


def post(url: str, payload: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    request = urllib.request.Request(f"{url}/sdapi/v1/txt2img", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one request may take")
    args = parser.parse_args()

    base = {"prompt": TARGET, "negative_prompt": "", "seed": 7, "steps": args.steps, "width": args.size,
            "height": args.size, "batch_size": 2, "sampler_name": "Euler", "cfg_scale": 7.0}
    requests = {"plain": base}
    for mode in args.modes:
        requests[mode] = {**base, "alwayson_scripts": {"MasaCtrl": {"args": masactrl_args(**MODES[mode])}}}

    first = {name: post(args.url, payload, args.timeout) for name, payload in requests.items()}  # warm-up
    info = json.loads(first["plain"]["info"])
    for name, reply in first.items():
        if name != "plain" and "MasaCtrl: True" not in json.loads(reply["info"])["infotexts"][1]:
            raise SystemExit(f"{name}: the WebUI did not run MasaCtrl: {reply['info'][:300]}")

    times: Dict[str, List[float]] = {name: [] for name in requests}
    order = list(requests)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:  # alternate, so no setting always follows another
            payload = requests[name]
            start = time.perf_counter()
            post(args.url, payload, args.timeout)
            times[name].append(time.perf_counter() - start)

    plain = statistics.median(times["plain"])
    print(f"host {info.get('version')}, model {info.get('sd_model_name')}, {args.size}x{args.size}, "
          f"{args.steps} Euler steps, one pair, median of {args.repeats}")
    print("| setting | seconds | time |")
    print("|---|---|---|")
    for name, measured in times.items():
        median = statistics.median(measured)
        print(f"| {name} | {median:.2f} | {median / plain:.3f}x |")


if __name__ == "__main__":
    main()
