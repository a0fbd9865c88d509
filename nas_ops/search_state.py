"""Search state: one atomic checkpoint of a whole search, so a killed search resumes bit-identically.

The file ``<output_dir>/search_state.pt`` holds the loop state (position, population, history), the state dicts
of the stateful objects (model, optimisers, schedulers, architecture parameters), every RNG state and, once the
search is done, its result. It is written with a temporary file, fsync and ``os.replace``: a kill at any moment
leaves the old or the new complete checkpoint. It loads with ``torch.load(weights_only=True)``: RNG states are
stored as tensors and lists of ints, never as numpy objects. A finished search also writes its result to
``<output_dir>/search_result.json``, readable without torch.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import torch

from nas_ops.atomic import atomic_write, write_json_atomic
from nas_ops.errors import InputError

FORMAT = "nas_ops.search_state"
VERSION = 2  # 2: the run identity is part of every checkpoint
RESULT_FILENAME = "search_result.json"

Generator = np.random.Generator | torch.Generator


class Stateful(Protocol):
    """Anything checkpointed through its state dict: modules, optimisers, LR schedulers, grad scalers."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> Any: ...


Objects = Mapping[str, Stateful | torch.Tensor]


@dataclass(frozen=True)
class Resumed:
    """What :meth:`SearchState.resume` found: the saved loop state, and the result if the search is finished."""

    fresh: bool  # no checkpoint: start from the beginning
    state: dict[str, Any] = field(default_factory=dict)  # saved loop state; {} when fresh
    finished: bool = False
    result: Any = None


# ------------------------------------------------------------------------------------------------------- RNG states


def _encode_numpy(value: Any) -> Any:
    """A numpy bit-generator state as plain data: arrays become ``{"ndarray": [ints], "dtype": str}``."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode_numpy(v) for k, v in value.items()}
    return value


def _decode_numpy(value: Any) -> Any:
    """Inverse of :func:`_encode_numpy`."""
    if isinstance(value, dict):
        if set(value) == {"ndarray", "dtype"}:
            return np.asarray(value["ndarray"], dtype=value["dtype"])
        return {k: _decode_numpy(v) for k, v in value.items()}
    return value


def capture_rng_state(generators: Mapping[str, Generator] | None = None) -> dict[str, Any]:
    """RNG states of python ``random``, numpy's global RNG, torch CPU and CUDA, and the named ``generators``.

    Everything is plain data or tensors, so the result survives ``torch.load(weights_only=True)``.
    """
    version, internal, gauss_next = random.getstate()
    named: dict[str, Any] = {}
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            named[name] = {"kind": "torch", "state": gen.get_state()}
        elif isinstance(gen, np.random.Generator):
            named[name] = {"kind": "numpy", "state": _encode_numpy(gen.bit_generator.state)}
        else:
            raise TypeError(f"generator '{name}': expected numpy.random.Generator or torch.Generator, got {type(gen)}")
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": _encode_numpy(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": named,
    }


def restore_rng_state(
    rng: Mapping[str, Any], generators: Mapping[str, Generator] | None = None, *, file: str | Path | None = None
) -> None:
    """Put back the states from :func:`capture_rng_state`; ``generators`` are set in place, by name.

    ``file`` only names the checkpoint in error messages. A CUDA state that does not fit this machine's GPUs is
    skipped with a warning: the run then continues, but is no longer bit-identical on the GPU.
    """
    saved = rng.get("generators", {})
    for name, gen in (generators or {}).items():
        kind = "torch" if isinstance(gen, torch.Generator) else "numpy"
        if name not in saved:
            raise InputError(file, f"rng.generators.{name}", f"missing; the checkpoint has {sorted(saved)}")
        if saved[name]["kind"] != kind:
            raise InputError(file, f"rng.generators.{name}", f"saved a {saved[name]['kind']} generator, got {kind}")
    python = rng["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    np.random.set_state(_decode_numpy(rng["numpy"]))
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("torch_cuda")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"{file}: CUDA RNG state for {len(cuda)} GPU(s) not restored on this machine", stacklevel=2)
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            gen.set_state(saved[name]["state"])
        else:
            gen.bit_generator.state = _decode_numpy(saved[name]["state"])


# ----------------------------------------------------------------------------------------------------- search state


class SearchState:
    """A handle on ``<output_dir>/search_state.pt``, the checkpoint of one run (a search, a phase, a training).

    ``identity`` is what decides the run's result (settings, genotype, the dataset's fingerprint): it is stored in
    every checkpoint, and a checkpoint of another identity is refused, naming the first field that differs, before
    anything is loaded or written; so a finished run is only reported, and an unfinished one only resumed, for the
    same identity. Usage in a loop::

        ckpt = SearchState(out_dir, identity={"seed": 0, "epochs": 10, "dataset": fingerprint})
        r = ckpt.resume({"model": net, "w_opt": w_opt, "alpha": alpha}, generators={"mut": rng})
        if r.finished:
            return r.result
        for epoch in range(r.state.get("epoch", 0), epochs):
            ...
            ckpt.save({"epoch": epoch + 1, "population": pop}, objects=..., generators=...)
        ckpt.finish(result)

    The file is read once per run: :meth:`resume` (or :meth:`inspect`, the header only) reads it, later writes
    update the copy kept in memory.
    """

    def __init__(
        self,
        output_dir: str | Path,
        filename: str = "search_state.pt",
        result_filename: str = RESULT_FILENAME,
        *,
        identity: Mapping[str, Any] | None = None,
        what: str = "search",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / filename
        self.result_path = self.output_dir / result_filename
        self.identity = json.loads(json.dumps(identity)) if identity is not None else None
        self.what = what
        self._payload: dict[str, Any] | None = None  # the last payload read or written

    def __repr__(self) -> str:
        return f"SearchState('{self.path}')"

    def exists(self) -> bool:
        """Whether a checkpoint has been written."""
        return self.path.is_file()

    def inspect(self) -> Resumed:
        """What the checkpoint holds: fresh, or the loop state and finished/result (nothing is loaded into objects).

        Refuses a checkpoint of another identity. The file is read here once; :meth:`resume` then uses that copy.
        """
        if not self.exists():
            return Resumed(fresh=True)
        h = self._full()
        self._mirror_result(h)
        return Resumed(fresh=False, state=h["state"], finished=h["finished"], result=h["result"])

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` has marked this run done."""
        return self.inspect().finished

    @property
    def result(self) -> Any:
        """The result given to :meth:`finish`; None while the run is unfinished."""
        return self.inspect().result

    def save(
        self,
        state: dict[str, Any],
        *,
        objects: Objects | None = None,
        generators: Mapping[str, Generator] | None = None,
        rng: bool = True,
    ) -> None:
        """Atomically write the loop ``state``, the state dicts of ``objects`` and (with ``rng``) every RNG state.

        ``state`` holds the loop position (e.g. step, epoch, phase) and plain data (population, history); tensors are
        allowed. Anything that would not load with ``weights_only=True`` is refused and the old checkpoint kept.
        """
        payload = self._new_payload(state, objects, capture_rng_state(generators) if rng else None)
        self._write(payload)

    def load(
        self,
        objects: Objects | None = None,
        *,
        generators: Mapping[str, Generator] | None = None,
        restore_rng: bool = True,
    ) -> dict[str, Any]:
        """Read the file now (another process may be writing it), return the saved loop state; load the saved state
        dicts into ``objects`` and restore the RNG states."""
        self._payload = None
        payload = self._full()
        return self._apply(payload, objects, generators, restore_rng)

    def resume(self, objects: Objects | None = None, *, generators: Mapping[str, Generator] | None = None) -> Resumed:
        """Start-of-run step: load the checkpoint if one exists (refusing another identity), and report whether the
        run is already done. On a finished run the objects still receive the final state (for an export)."""
        if not self.exists():
            return Resumed(fresh=True)
        payload = self._full()
        state = self._apply(payload, objects, generators, restore_rng=payload["rng"] is not None)
        self._mirror_result(payload)
        return Resumed(fresh=False, state=state, finished=payload["finished"], result=payload["result"])

    def finish(self, result: Any) -> None:
        """Mark the run finished with its JSON-able ``result``, kept in the checkpoint and in the result JSON.

        The last saved state, objects and RNG states are kept; without a checkpoint an empty state is stored.
        """
        text = json.dumps(result, indent=2)  # refuse a result that is not JSON-able before touching any file
        payload = self._full() if self.exists() else self._new_payload({}, None, None)
        payload = {**payload, "finished": True, "result": json.loads(text)}
        self._write(payload)
        self._write_result(result)

    # ------------------------------------------------------------------------------------------------------ internals

    def _mirror_result(self, payload: dict[str, Any]) -> None:
        """A finished run's result JSON is rewritten from the checkpoint when it is missing (killed between the two
        writes of :meth:`finish`), unreadable (truncated) or not the checkpoint's result: never kept as it was."""
        if not payload["finished"]:
            return
        try:  # compared as text: a NaN in a result is never equal to itself
            same = (json.dumps(json.loads(self.result_path.read_text()), sort_keys=True)
                    == json.dumps(payload["result"], sort_keys=True))
        except (OSError, ValueError):
            same = False
        if not same:
            if self.result_path.is_file():
                warnings.warn(f"{self.result_path} did not hold the finished {self.what}'s result (truncated or "
                              "edited): rewritten from its checkpoint", stacklevel=3)
            self._write_result(payload["result"])

    def _new_payload(self, state: dict[str, Any], objects: Objects | None, rng: dict[str, Any] | None) -> dict:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        saved = {
            name: obj.detach() if isinstance(obj, torch.Tensor) else obj.state_dict()
            for name, obj in (objects or {}).items()
        }
        return {
            "format": FORMAT,
            "version": VERSION,
            "identity": self.identity,
            "state": state,
            "objects": saved,
            "rng": rng,
            "finished": False,
            "result": None,
        }

    def _full(self) -> dict[str, Any]:
        """The whole payload: the one written last by this handle, or read (once) from the file."""
        if self._payload is None:
            payload = self._read()
            self._check_identity(payload)
            self._remember(payload)
        return self._payload

    def _remember(self, payload: dict[str, Any]) -> None:
        self._payload = payload

    def _check_identity(self, payload: dict[str, Any]) -> None:
        if self.identity is not None:
            refuse_other_settings(payload["identity"] or {}, self.identity, self.path, self.what)

    def _apply(
        self,
        payload: dict[str, Any],
        objects: Objects | None,
        generators: Mapping[str, Generator] | None,
        restore_rng: bool,
    ) -> dict[str, Any]:
        """Load the saved state dicts into ``objects``, restore the RNG states, return the loop state."""
        saved = payload["objects"]
        for name, obj in (objects or {}).items():
            if name not in saved:
                raise InputError(self.path, f"objects.{name}", f"missing; the checkpoint has {sorted(saved)}")
            if isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.copy_(saved[name])
            else:
                obj.load_state_dict(saved[name])
        if restore_rng:
            if payload["rng"] is None:
                raise InputError(self.path, "rng", "not saved (save(rng=False)); load with restore_rng=False")
            restore_rng_state(payload["rng"], generators, file=self.path)
        return payload["state"]

    def _write(self, payload: dict[str, Any]) -> None:
        def write(fh: IO[bytes]) -> None:
            torch.save(payload, fh)
            check = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
            if check is not None:
                fh.flush()
                fh.seek(0)
                unsafe = check(fh)
                if unsafe:
                    raise TypeError(
                        f"{self.path}: the search state holds objects that torch.load(weights_only=True) refuses: "
                        f"{unsafe}; store plain python data, tensors or lists instead (e.g. array.tolist())"
                    )

        atomic_write(self.path, write)
        self._remember(payload)

    def _write_result(self, result: Any) -> None:
        write_json_atomic(self.result_path, result)

    def _read(self) -> dict[str, Any]:
        """Load and validate the checkpoint."""
        if not self.exists():
            raise FileNotFoundError(f"{self.path}: no search-state checkpoint")
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(self.path, None, f"not a readable checkpoint ({reason}); it may be truncated or "
                             "corrupted: move it away to start this run again") from exc
        if not isinstance(payload, dict) or "format" not in payload:
            raise InputError(self.path, "format", f"missing; not a search-state checkpoint ('{FORMAT}')")
        if payload["format"] != FORMAT:
            raise InputError(self.path, "format", f"is {payload['format']!r}, expected '{FORMAT}'")
        if payload.get("version") != VERSION:
            raise InputError(self.path, "version", f"is {payload.get('version')!r}, this code reads version {VERSION} "
                             "(a checkpoint of an earlier medseg-nas): run in a new output_dir")
        for key, kind in (("state", dict), ("objects", dict), ("rng", (dict, type(None))), ("finished", bool),
                          ("identity", (dict, type(None)))):
            if key not in payload:
                raise InputError(self.path, key, "missing")
            if not isinstance(payload[key], kind):
                raise InputError(self.path, key, f"has type {type(payload[key]).__name__}")
        return payload


def first_difference(saved: Any, wanted: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The dotted field where two JSON documents first differ, with both values; None when they are equal."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for key in [*wanted, *(k for k in saved if k not in wanted)]:
            field = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in wanted:
                return field, saved.get(key, "<absent>"), wanted.get(key, "<absent>")
            found = first_difference(saved[key], wanted[key], field)
            if found is not None:
                return found
        return None
    return None if saved == wanted else (prefix or "<root>", saved, wanted)


def refuse_other_settings(saved: Mapping[str, Any], wanted: Mapping[str, Any], source: str | Path,
                          what: str = "search") -> None:
    """Refuse to resume (or report) a run in an output_dir started with settings that change its result, naming the
    first (dotted) field whose saved value differs; a key on one side only is a difference too."""
    found = first_difference(dict(saved), dict(wanted))
    if found is None:
        return
    key, before, now = found
    raise InputError(
        source, key, f"this output_dir holds a {what} run with {key}={before!r:.80}, now {now!r:.80}: "
        "pass another output_dir, or the same settings to resume it",
    )
