#!/usr/bin/env bash
# The test command: builds the pinned test environment in .venv (the first time, and again whenever
# requirements-test.txt or this file changes), then runs the suite. Arguments go to pytest.
# Needs Python 3.11 with venv (set PYTHON to choose the interpreter). A .venv this script did not
# make is never touched: the script stops and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.masactrl-test-environment
wanted=$(cat requirements-test.txt tests/run.sh | sha256sum | cut -d ' ' -f 1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    if [ -e .venv ] && [ ! -e "$stamp" ]; then
        echo "tests/run.sh: .venv exists but was not made by this script; move it away (or delete it) and run again" >&2
        exit 2
    fi
    python="${PYTHON:-}"
    if [ -z "$python" ]; then
        for candidate in python3.11 python3; do
            if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
                python="$candidate"
                break
            fi
        done
    fi
    if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        echo "tests/run.sh: the test environment needs Python 3.11 (the WebUI's); install it or set PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        echo "tests/run.sh: $python has no venv/ensurepip module; install it (Debian: apt install python3.11-venv)" >&2
        exit 2
    fi
    rm -rf .venv
    "$python" -m venv .venv
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
