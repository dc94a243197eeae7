"""Whole generations in a running WebUI (A1111 or Forge), MasaCtrl against plain, through its API.

The other benchmarks time the engine on test U-Nets; this one times what a user waits for in a real
host, with that host's own attention kernel, sampler and model: a txt2img batch of one pair without
MasaCtrl, and the same batch with MasaCtrl in each mode. Requests take turns (plain, then each mode, and
back in reverse order) so that drift and order hit all alike; it prints the median seconds and the ratio to plain, and
which host and model answered. The requests are the real-host tier's (tests/realhost/webui_api.py,
``payload``). Start the WebUI with ``--api`` first.

    python benchmarks/host_generation.py --url http://127.0.0.1:7861 --size 64 --steps 4 --repeats 5
    python benchmarks/host_generation.py --url http://gpu-host:7860 --size 512 --steps 20   # on a GPU
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from typing import Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

# The real-host tier's client and requests (tests/realhost/webui_api.py).
from realhost.webui_api import CONTROLLED, SOURCE_PROMPT, WebUI, masactrl_args, payload  # noqa: E402

MODES = {
    "mutual": {},
    "union": {"mode": "union"},
    "word masks": {"mask_mode": "subject words", "mask_words": "corgi"},
    "strength 0.5": {"strength": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one request may take")
    args = parser.parse_args()

    webui = WebUI(args.url, args.timeout)
    size = {"width": args.size, "height": args.size, "steps": args.steps}
    requests = {"plain": payload(**size)}
    for mode in args.modes:
        settings = masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED, **MODES[mode])
        requests[mode] = payload(masactrl=settings, **size)

    first = {name: webui.generate(body) for name, body in requests.items()}  # warm-up
    info = first["plain"].info
    for name, made in first.items():
        if name != "plain" and "MasaCtrl: True" not in made.infotexts[1]:
            raise SystemExit(f"{name}: the WebUI did not run MasaCtrl: {made.infotexts[1][:300]}")

    times: Dict[str, List[float]] = {name: [] for name in requests}
    order = list(requests)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:  # alternate, so no setting always follows another
            start = time.perf_counter()
            webui.generate(requests[name])
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
