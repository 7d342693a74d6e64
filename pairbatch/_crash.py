"""Named crash points for the kill-anywhere tests.

``PAIRBATCH_CRASH_AT=<name>`` in the environment makes the process kill itself with
SIGKILL when it reaches the point of that name: no cleanup, no ``finally``, exactly as a
power cut or an OOM kill would leave the run folder. Unset (always, outside the tests),
a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PAIRBATCH_CRASH_AT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
