"""The execution layer: independent jobs (candidate trainings, a stage's groups, nnU-Net trainings) run in this
process, on Ray, or in a pool of subprocesses, chosen by one config key, ``backend``.

A :class:`Job` is a function named by its dotted path with JSON-able keyword arguments, so it runs the same in any
process; it returns a JSON-able result. :func:`executor` opens a backend and gives ``run(jobs)``, which yields
``(job, result)`` as jobs finish (in order for ``local``, in completion order otherwise):

- ``local``: one after another in this process (the default: a laptop, CI, a debugger).
- ``ray``: Ray tasks of one CPU and one torch thread each, on a local cluster of ``parallel_jobs`` CPUs or on the
  cluster at ``ray_address`` (``pip install "medseg-nas[ray]"``).
- ``subprocess``: ``parallel_jobs`` fresh Python processes at a time (:mod:`nas_ops.engine.worker`), each in its
  own process group, killed with all its children past ``timeout_s``; for jobs that start other programs
  (nnU-Net's CLI) or must not share a process.

The same job gives the same result on every backend when this process also runs one torch thread (Ray and
subprocess jobs run one each; float reductions on the CPU differ between thread counts), since each job seeds its
own RNGs. Bad input inside a job reaches the caller as the job's own one-line
:class:`~nas_ops.errors.InputError` on every backend.
"""

from __future__ import annotations

import json
import logging
import os
import pydoc
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas_ops.errors import InputError

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray", "subprocess")
INPUT_ERROR_EXIT = 3  # a subprocess job refused its input (nas_ops.engine.worker)


@dataclass(frozen=True)
class Job:
    """One independent job: ``fn(**kwargs)``, ``fn`` a dotted path; ``tag`` is the caller's handle on it."""

    fn: str
    kwargs: dict[str, Any]
    tag: Any = None
    log: str | None = None  # subprocess backend: the job's stdout and stderr go here


RunJobs = Callable[[Sequence[Job]], Iterator[tuple[Job, Any]]]


def locate(path: str | Callable) -> Callable:
    """A callable, or the one a dotted path names (``package.module.function``), found with ``pydoc.locate``."""
    if callable(path):
        return path
    fn = pydoc.locate(str(path).replace(":", "."))
    if not callable(fn):
        raise InputError(None, "fn", f"{path!r} names no importable function")
    return fn


def dotted_path(fn: str | Callable) -> str:
    """The dotted path of a module-level function (how a job names it in every process)."""
    if isinstance(fn, str):
        return fn
    return f"{fn.__module__}.{fn.__qualname__}"


def call_job(fn: str, kwargs: dict[str, Any], threads: int | None = None) -> Any:
    """Run one job here; ``threads`` sets torch's CPU threads first (workers share the machine's cores)."""
    if threads:
        torch.set_num_threads(threads)
    return locate(fn)(**kwargs)


@contextmanager
def executor(backend: str = "local", parallel_jobs: int = 2, ray_address: str | None = None,
             timeout_s: float | None = None) -> Iterator[RunJobs]:
    """Open an execution backend (see the module docstring); ``run(jobs)`` yields ``(job, result)``."""
    if backend not in BACKENDS:
        raise InputError(None, "backend", f"must be one of {list(BACKENDS)}, got {backend!r}")
    if isinstance(parallel_jobs, bool) or not isinstance(parallel_jobs, int) or parallel_jobs < 1:
        raise InputError(None, "parallel_jobs", f"must be a positive integer, got {parallel_jobs!r}")
    if backend == "local":
        yield _run_local
    elif backend == "ray":
        with _ray(parallel_jobs, ray_address) as run:
            yield run
    else:
        yield lambda jobs: _run_subprocesses(jobs, parallel_jobs, timeout_s)


def _run_local(jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
    for job in jobs:
        yield job, call_job(job.fn, job.kwargs)


@contextmanager
def _ray(parallel_jobs: int, address: str | None) -> Iterator[RunJobs]:
    try:
        import ray
    except ImportError:
        raise InputError(None, "backend", "'ray' needs Ray: pip install \"medseg-nas[ray]\"") from None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster writes no token under the home folder
    temp_dir = None
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        temp_dir = tempfile.mkdtemp(prefix="ray_medseg_")
        ray.init(num_cpus=parallel_jobs, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    remote = ray.remote(num_cpus=1)(call_job)

    def run(jobs: Sequence[Job]) -> Iterator[tuple[Job, Any]]:
        refs = {remote.remote(job.fn, job.kwargs, 1): job for job in jobs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except InputError as err:  # Ray's error is also the original class: raise the original
                    cause = getattr(err, "cause", err)
                    raise InputError(cause.file, cause.field, cause.problem) from None
                yield refs[ref], result

    try:
        yield run
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _run_subprocesses(jobs: Sequence[Job], parallel_jobs: int, timeout_s: float | None) -> Iterator[tuple[Job, Any]]:
    """``parallel_jobs`` worker processes at a time; a failed or timed-out job stops the run naming its log."""
    work = Path(tempfile.mkdtemp(prefix="medseg_jobs_"))
    pending = list(enumerate(jobs))
    running: dict[int, tuple[subprocess.Popen, float, Any, Path]] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel_jobs:
                i, job = pending.pop(0)
                spec, result = work / f"job{i}.json", work / f"result{i}.json"
                spec.write_text(json.dumps({"fn": job.fn, "kwargs": job.kwargs, "result": str(result)}))
                log_path = Path(job.log) if job.log else work / f"job{i}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                fh = open(log_path, "w")  # noqa: SIM115  closed when the process ends
                proc = subprocess.Popen([sys.executable, "-m", "nas_ops.engine.worker", str(spec)], stdout=fh,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                running[i] = (proc, time.monotonic(), fh, log_path)
            time.sleep(0.2)
            for i, (proc, start, fh, log_path) in list(running.items()):
                elapsed = time.monotonic() - start
                if proc.poll() is None and (timeout_s is None or elapsed < timeout_s):
                    continue
                job = jobs[i]
                if proc.returncode is None:
                    kill_group(proc)
                    fh.close()
                    raise TimeoutError(f"job {job.tag or job.fn} ran past {timeout_s} s; log: {log_path}")
                fh.close()
                del running[i]
                if proc.returncode == INPUT_ERROR_EXIT:
                    bad = json.loads((work / f"result{i}.json").read_text())["input_error"]
                    raise InputError(bad["file"], bad["field"], bad["problem"])
                if proc.returncode != 0:
                    raise RuntimeError(f"job {job.tag or job.fn} failed (exit {proc.returncode}); log: {log_path}")
                yield job, json.loads((work / f"result{i}.json").read_text())
    finally:
        for proc, _, fh, _ in running.values():
            kill_group(proc)
            fh.close()
        shutil.rmtree(work, ignore_errors=True)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group of a worker started by this module (its children included) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_command(argv: list[str], env: dict[str, str] | None = None, log: str | None = None) -> dict[str, Any]:
    """A job that runs a program (e.g. ``nnUNetv2_train``), its output into the worker's log (or into the file
    ``log``); fails on a non-zero exit, naming ``log``'s last line. Returns ``{"seconds": wall time}``."""
    tic = time.monotonic()
    sys.stdout.flush()
    run_env = {**os.environ, **(env or {})}
    if log is None:
        done = subprocess.run(argv, env=run_env, check=False)
    else:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            done = subprocess.run(argv, env=run_env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        last = "" if log is None else f" (log {log}): " + (
            Path(log).read_text(errors="replace").strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}{last}")
    return {"seconds": round(time.monotonic() - tic, 2)}
