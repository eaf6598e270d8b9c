#!/usr/bin/env bash
# The main job on a fresh clone: install into .venv, then `jobrunner demo`: the provider sandbox and a
# daemon on demo-data/, a scrape of a Sales Navigator search through faults and a rate limit, its live
# progress, the status table and the results. No API keys needed; nothing is left running when it exits.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/jobrunner demo --data-dir "$PWD/demo-data" "$@"
