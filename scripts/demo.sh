#!/usr/bin/env bash
# Fresh machine → demo: install imgprof, then run the whole pipeline on bundled real data.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e .
imgprof demo --out imgprof-demo
