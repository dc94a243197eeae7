#!/usr/bin/env bash
# The test command: builds the pinned test environment in .venv (the first time, and again whenever
# requirements-test.txt or this file changes), then runs the suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.masactrl-test-environment
wanted=$(cat requirements-test.txt tests/run.sh | sha256sum | cut -d ' ' -f 1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    # torch and torchvision first and alone: they are large, and resolving them together keeps pip
    # from picking a torchvision that does not import beside this torch.
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/python -m pip install -q -r requirements-test.txt
    # ldm (CompVis/Stability latent diffusion modules) without its pins on a CUDA torch and einops 0.3.
    .venv/bin/python -m pip install -q --no-deps "stable-diffusion-sdkit==2.1.5"
    echo "$wanted" > "$stamp"
fi

# pytest exits 5 when it collected no test, which fails this command like any other failure.
exec .venv/bin/python -m pytest -q "$@"
