"""The process behind one job of the ``subprocess`` backend: ``python -m nas_ops.engine.worker JOB.json``.

``JOB.json`` holds ``{"fn": dotted path, "kwargs": {...}, "result": path}``; the worker runs the job with one torch
thread and writes its JSON result to ``result``. A failure exits non-zero with the traceback in the job's log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nas_ops.atomic import write_json_atomic
from nas_ops.engine.execution import call_job


def main(argv: list[str]) -> None:
    """Run the job described by ``argv[0]``."""
    job = json.loads(Path(argv[0]).read_text())
    write_json_atomic(job["result"], call_job(job["fn"], job["kwargs"], threads=1))


if __name__ == "__main__":
    main(sys.argv[1:])
