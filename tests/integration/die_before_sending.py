"""Run a module as ``python -m integration.die_before_sending STAGE MODULE ARGS...`` in a process that kills
itself (SIGKILL) the moment it is about to send the task of STAGE to the broker: after the database recorded
what it sends, before any broker holds it (issue 19, item 5: the API or a worker dying in the publish gap).

``MODULE ARGS...`` is what would follow ``python -m``: ``uvicorn --factory ...`` or ``celery -A ... worker``.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

from celery.signals import before_task_publish


def main() -> None:
    stage, module, *args = sys.argv[1:]

    @before_task_publish.connect(weak=False)
    def die(sender=None, **_kwargs) -> None:
        if sender == f"wsis.stage.{stage}":
            os.kill(os.getpid(), signal.SIGKILL)

    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
