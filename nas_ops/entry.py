"""Where user input enters the library: the entry decorator, the one-line error path and the ``fire`` CLIs.

Bad input anywhere below an entry raises :class:`~nas_ops.errors.InputError` (``<file>: field '<field>': <problem>``).
A Python caller gets that exception. A user at a command line sees one line, ``error: <file>: field '<field>':
<problem>``, and exit status 1 (``MEDSEG_NAS_DEBUG=1`` shows the traceback):

- a ``fire`` CLI (``scripts/``, the console commands) runs through :func:`fire_main`, which turns the error into
  that exit;
- a bundle run (``python -m monai.bundle run``) gets :func:`install_error_hook` from the bundle adapter: MONAI wraps
  an error raised inside a config expression in ``RuntimeError: Failed to evaluate ...`` after a long chained
  traceback, so the hook finds the InputError in the chain of the uncaught exception and prints its line instead.

Faults of the machine get one line too (:func:`machine_fault`): Ctrl-C says the run can be resumed with the same
command (exit status 130 from a CLI), a full disk or a read-only folder names the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from nas_ops.config import checked, nearest
from nas_ops.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "MEDSEG_NAS_DEBUG"


def entry(fn: F) -> F:
    """Mark a function a bundle config, a CLI or the study calls: its arguments are checked against its type hints
    (:func:`nas_ops.config.checked`) before it runs; bad input raises :class:`~nas_ops.errors.InputError`."""
    return checked(fn)


def one_line(err: InputError) -> str:
    """The line a user sees for bad input."""
    return f"error: {err}"


def debugging() -> bool:
    """Whether the user asked for tracebacks (``MEDSEG_NAS_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def input_error_in(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` behind ``exc``: itself, or one it was raised from (``raise ... from err``, as MONAI
    wraps an error of a config expression), or None. An error raised while handling an InputError is another
    error: it keeps its traceback."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


FAULT_HINTS = {errno.EROFS: "the folder is on a read-only file system: write the run elsewhere",
               errno.ENOSPC: "free space and run the same command again (finished work is kept)",
               errno.EDQUOT: "free space and run the same command again (finished work is kept)",
               errno.EACCES: "check its permissions: inputs must be readable, output folders writable"}
INTERRUPTED = ("interrupted: finished work is kept (checkpoints are written whole or not at all); run the same "
               "command again to resume")


def machine_fault(exc: BaseException | None) -> str | None:
    """The line a user sees for a fault of the machine rather than of the code (Ctrl-C, a full disk, a read-only
    folder), found in ``exc`` or what it was raised from or during; None for anything else."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return INTERRUPTED
        if isinstance(exc, OSError) and exc.errno in FAULT_HINTS:
            where = exc.filename or "(no file named by the system)"
            return f"error: {where}: {exc.strerror or os.strerror(exc.errno)}: {FAULT_HINTS[exc.errno]}"
        exc = exc.__cause__ or exc.__context__
    return None


def install_error_hook() -> None:
    """Show an uncaught exception caused by bad input as its one line (exit status 1: Python's for any uncaught
    exception); every other exception keeps its traceback. Installed once per process."""
    if getattr(sys.excepthook, "medseg_nas", False):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        err = input_error_in(value)
        line = one_line(err) if err is not None else machine_fault(value)
        if line is None or debugging():
            previous(kind, value, tb)
        else:
            print(line, file=sys.stderr)

    hook.medseg_nas = True  # type: ignore[attr-defined]
    sys.excepthook = hook


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Run a command's body: an exception caused by bad input leaves as ``SystemExit`` with its one line (what the
    user sees, exit status 1); everything else, and everything when debugging, propagates unchanged."""
    try:
        yield
    except KeyboardInterrupt:
        if debugging():
            raise
        print(INTERRUPTED, file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        err = input_error_in(exc)
        line = one_line(err) if err is not None else machine_fault(exc)
        if line is None or debugging():
            raise
        raise SystemExit(line) from None


def cli(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` for a command line (see :func:`command_line`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with command_line():
            return fn(*args, **kwargs)

    return wrapper


def fire_main(commands: Callable[..., Any] | dict[str, Callable[..., Any]], argv: list[str] | None = None) -> Any:
    """Run a ``fire`` CLI (one function, or commands by name) with the one error path, after refusing an option
    the function does not take: fire would call the function without it and only then complain, so a typo'd
    ``--out_dri`` would still write into the default folder."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    fn, rest, where = commands, args, Path(sys.argv[0]).name
    if isinstance(commands, dict):
        if not args or args[0] not in commands:
            return fire.Fire({name: cli(f) for name, f in commands.items()}, command=args)
        fn, rest, where = commands[args[0]], args[1:], f"{where} {args[0]}"
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for arg in rest:
            if arg == "--":
                break
            if arg.startswith("--") and arg not in ("--help", "--interactive", "--trace", "--verbose"):
                key = arg[2:].split("=", 1)[0].replace("-", "_")
                if key not in params:
                    err = InputError(where, key, f"unknown option{nearest(key, list(params))}; options: "
                                     f"{['--' + n for n, q in params.items() if q.kind is not q.VAR_POSITIONAL]}")
                    raise SystemExit(one_line(err))
    target = {name: cli(f) for name, f in commands.items()} if isinstance(commands, dict) else cli(commands)
    return fire.Fire(target, command=args)
