"""Named points where a test can make the daemon die with SIGKILL, to prove recovery from exactly there.

Set ``JOBRUNNER_FAILPOINT=name`` (or ``name:N`` to die at the Nth time the point is reached). Unset, as in
production, ``hit`` is one dictionary lookup. The kill is a real kill -9 of the real process: nothing is
cleaned up, exactly as after a crash or a power cut of the process.
"""

from __future__ import annotations

import os
import signal

_ENV = os.environ.get("JOBRUNNER_FAILPOINT", "")
_name, _, _nth = _ENV.partition(":")
_remaining = int(_nth) if _nth.isdigit() else 1

POINTS = (
    "claimed",            # a client's file is in our claim folder, not yet validated
    "accepted",           # the request is in .active/, flocked; no status written yet
    "tmp-written",        # a status or step result is in its temp file, not yet renamed into place
    "renamed",            # a status or step result is in place, not yet synced
    "step-saved",         # a step's result is stored; the step has not returned
    "before-move",        # a final or pending status is durable; the request has not moved yet
)
RECOVERY_POINTS = (
    "recovery-counted",   # recovery wrote an interrupted attempt; the request has not moved yet
)


def hit(name: str) -> None:
    global _remaining
    if name != _name:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
