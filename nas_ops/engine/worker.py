"""The process behind one job of the ``subprocess`` backend: ``python -m nas_ops.engine.worker JOB.json``.

``JOB.json`` holds ``{"fn": dotted path, "kwargs": {...}, "result": path}``; the worker runs the job with one torch
thread and writes its JSON result to ``result``. Bad input (an :class:`~nas_ops.errors.InputError`) is written there
as ``{"input_error": {file, field, problem}}`` with exit status 3, so the parent raises the same one-line error; any
other failure exits non-zero with the traceback in the job's log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nas_ops.atomic import write_json_atomic
from nas_ops.engine.execution import INPUT_ERROR_EXIT, call_job
from nas_ops.errors import InputError


def main(argv: list[str]) -> None:
    """Run the job described by ``argv[0]``."""
    job = json.loads(Path(argv[0]).read_text())
    try:
        result = call_job(job["fn"], job["kwargs"], threads=1)
    except InputError as err:
        write_json_atomic(job["result"], {"input_error": {"file": err.file, "field": err.field,
                                                          "problem": err.problem}})
        print(f"error: {err}", file=sys.stderr)
        sys.exit(INPUT_ERROR_EXIT)
    write_json_atomic(job["result"], result)


if __name__ == "__main__":
    main(sys.argv[1:])
