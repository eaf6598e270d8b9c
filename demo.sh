#!/usr/bin/env bash
# The main job on a fresh clone: install, submit sample requests to a demo data dir, run the daemon until
# they are done, and show the status table. Nothing is left running when it exits.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
export JOBRUNNER_DATA_DIR="$PWD/demo-data"
rm -rf "$JOBRUNNER_DATA_DIR"
jr=.venv/bin/jobrunner
echo "== submitting 3 sample jobs to $JOBRUNNER_DATA_DIR/queue/"
echo '{"type": "noop", "id": "sample-quick", "metadata": {"campaign": "demo"}}' | $jr submit -
echo '{"type": "noop", "id": "sample-steps", "steps": 10, "step_seconds": 0.2}' | $jr submit -
# a client that is not jobrunner: write a file elsewhere, rename it into the spool
echo '{"type": "noop", "steps": 3, "step_seconds": 0.1}' > "$JOBRUNNER_DATA_DIR/queue/.tmp/by-hand"
mv "$JOBRUNNER_DATA_DIR/queue/.tmp/by-hand" "$JOBRUNNER_DATA_DIR/queue/by-hand.json"
echo "== running the daemon until nothing is due (jobrunner run --burst)"
$jr run --burst
echo "== jobrunner status"
$jr status
echo "== jobrunner status sample-steps"
$jr status sample-steps
echo "Status files are in $JOBRUNNER_DATA_DIR/jobs/; requests are kept in $JOBRUNNER_DATA_DIR/queue/.done/."
