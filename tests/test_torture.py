"""The torture sample CI runs: 20 trials of bench/torture.py (scrape and enrich jobs against a faulty
sandbox, daemons killed with SIGKILL at random moments, sometimes two on one data dir), every check at zero.
The full run (300 trials) is by hand; its figures are in docs/RELIABILITY.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import torture  # bench/torture.py, found through the path above

TRIALS = 20


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_twenty_torture_trials_lose_tear_duplicate_and_repeat_nothing(tmp_path: Path) -> None:
    totals = torture.run(TRIALS, seed=20261204, base=tmp_path)
    print(torture.report(totals))
    assert totals.trials == TRIALS
    assert totals.kills >= TRIALS and totals.second_daemon_kills > 0  # the kills did happen
    assert totals.steps > 0 and totals.paid >= totals.steps
    assert totals.problems == [], "\n".join(totals.problems)
    assert (totals.lost, totals.torn, totals.duplicated, totals.repeated, totals.secrets) == (0, 0, 0, 0, 0)
