"""Search state: atomic checkpoints, RNG round trips, bit-identical resume after SIGKILL, refusal of bad files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _toy_search
import numpy as np
import pytest
import torch

from nas_ops import atomic, search_state
from nas_ops.errors import InputError
from nas_ops.search_state import SearchState, capture_rng_state, restore_rng_state

torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
EPOCHS = 20


def _draw(np_gen: np.random.Generator, torch_gen: torch.Generator) -> list[Any]:
    """The next numbers of every RNG kind."""
    return [
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.rand(3).tolist(),
        np.random.randn(),
        np_gen.random(3).tolist(),
        np_gen.integers(0, 1 << 40),
        torch.rand(3).tolist(),
        torch.randperm(10).tolist(),
        torch.rand(3, generator=torch_gen).tolist(),
    ]


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive exact equality; tensors compared with torch.equal and dtype."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _raw(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# -------------------------------------------------------------------------------------------------- atomic writes


def test_save_leaves_no_temp_files_and_loads_weights_only(tmp_path: Path) -> None:
    ckpt = SearchState(tmp_path / "out")
    assert not ckpt.exists() and not ckpt.finished and ckpt.result is None
    ckpt.save({"epoch": 1, "alpha": torch.arange(3.0), "population": [{"width": 8}]})
    ckpt.save({"epoch": 2, "alpha": torch.arange(3.0), "population": [{"width": 16}]})
    assert sorted(os.listdir(tmp_path / "out")) == ["search_state.pt"]
    raw = _raw(ckpt.path)
    assert raw["format"] == search_state.FORMAT and raw["version"] == search_state.VERSION
    state = ckpt.load(restore_rng=False)
    assert state["epoch"] == 2 and state["population"] == [{"width": 16}]
    assert torch.equal(state["alpha"], torch.arange(3.0))


def test_crash_during_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = SearchState(tmp_path)
    ckpt.save({"epoch": 1, "w": torch.ones(4)})
    before = ckpt.path.read_bytes()

    def torn_save(obj: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save({"epoch": 2, "w": torch.zeros(4)})
    monkeypatch.undo()

    assert ckpt.path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["search_state.pt"]
    state = ckpt.load(restore_rng=False)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(4))


def test_crash_at_replace_keeps_previous_and_stale_temp_is_cleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = SearchState(tmp_path)
    ckpt.save({"epoch": 1})
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ckpt.save({"epoch": 2})
    monkeypatch.undo()
    assert ckpt.load(restore_rng=False)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["search_state.pt"]

    (tmp_path / ".search_state.pt.killed.tmp").write_bytes(b"torn")  # what a SIGKILL mid-write leaves
    ckpt.save({"epoch": 2})
    assert sorted(os.listdir(tmp_path)) == ["search_state.pt"]
    assert ckpt.load(restore_rng=False)["epoch"] == 2


def test_state_that_would_not_load_weights_only_is_refused(tmp_path: Path) -> None:
    ckpt = SearchState(tmp_path)
    ckpt.save({"epoch": 1})
    with pytest.raises(TypeError, match="weights_only"):
        ckpt.save({"epoch": 2, "scores": np.zeros(3)})
    assert ckpt.load(restore_rng=False) == {"epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["search_state.pt"]


# ------------------------------------------------------------------------------------------------------ RNG states


def test_rng_round_trip_in_memory() -> None:
    np_gen, torch_gen = np.random.default_rng(5), torch.Generator().manual_seed(6)
    _draw(np_gen, torch_gen)  # leave every RNG mid-stream, python's gauss cache included
    saved = capture_rng_state({"np": np_gen, "torch": torch_gen})
    expected = _draw(np_gen, torch_gen)
    _draw(np_gen, torch_gen)
    restore_rng_state(saved, {"np": np_gen, "torch": torch_gen})
    assert _draw(np_gen, torch_gen) == expected


def test_rng_round_trip_through_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np_gen, torch_gen = np.random.default_rng(4), torch.Generator().manual_seed(5)
    _draw(np_gen, torch_gen)
    ckpt = SearchState(tmp_path)
    ckpt.save({"step": 7}, generators={"np": np_gen, "torch": torch_gen})
    expected = _draw(np_gen, torch_gen)

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    np_gen2, torch_gen2 = np.random.default_rng(99), torch.Generator().manual_seed(99)
    assert ckpt.load(generators={"np": np_gen2, "torch": torch_gen2}) == {"step": 7}
    assert _draw(np_gen2, torch_gen2) == expected


def test_generator_missing_from_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = SearchState(tmp_path)
    ckpt.save({"step": 1})
    with pytest.raises(InputError, match=r"rng\.generators\.mutation"):
        ckpt.load(generators={"mutation": np.random.default_rng(0)})


# ----------------------------------------------------------------------------------------------- objects and finish


def test_resume_loads_objects_and_finish_writes_result(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    alpha = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    ckpt = SearchState(tmp_path)
    assert ckpt.resume({"net": net}).fresh
    ckpt.save({"epoch": 3}, objects={"net": net, "opt": opt, "alpha": alpha})

    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.1)
    alpha2 = torch.nn.Parameter(torch.zeros(2))
    resumed = ckpt.resume({"net": net2, "opt": opt2, "alpha": alpha2})
    assert not resumed.fresh and not resumed.finished and resumed.state == {"epoch": 3}
    _assert_same(net2.state_dict(), net.state_dict())
    _assert_same(opt2.state_dict(), opt.state_dict())
    assert torch.equal(alpha2, alpha)
    with pytest.raises(InputError, match=r"objects\.scheduler"):
        ckpt.resume({"scheduler": net2})

    result = {"score": 0.875, "genotype": {"name": "toy", "ops": ["conv", "skip"]}}
    ckpt.finish(result)
    assert ckpt.finished and ckpt.result == result
    assert json.loads((tmp_path / "search_result.json").read_text()) == result
    assert ckpt.load(restore_rng=False) == {"epoch": 3}
    (tmp_path / "search_result.json").unlink()  # as if killed between the two writes of finish()
    resumed = ckpt.resume({"net": net2})
    assert resumed.finished and resumed.result == result
    assert json.loads((tmp_path / "search_result.json").read_text()) == result
    text = (tmp_path / "search_result.json").read_text()
    (tmp_path / "search_result.json").write_text(text[: len(text) // 2])  # truncated: rewritten, never kept
    with pytest.warns(UserWarning, match="search_result.json did not hold the finished search's result"):
        assert SearchState(tmp_path, identity=ckpt.identity).inspect().finished
    assert json.loads((tmp_path / "search_result.json").read_text()) == result
    with pytest.raises(TypeError):
        ckpt.finish({"weights": torch.ones(2)})
    assert ckpt.result == result


# ------------------------------------------------------------------------------------------------- bad checkpoints


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"\x00garbage, not a checkpoint" * 10, "<root>"),
        ({"epoch": 3, "model": {}}, "format"),
        ([1, 2, 3], "format"),
        ({"format": "someone.else", "version": 1}, "format"),
        ({"format": search_state.FORMAT, "version": 999}, "version"),
        ({"format": search_state.FORMAT, "version": 1, "state": {}}, "version"),
        ({"format": search_state.FORMAT, "version": search_state.VERSION, "state": {}}, "objects"),
    ],
)
def test_bad_checkpoint_is_refused_naming_the_file(tmp_path: Path, content: Any, field: str) -> None:
    path = tmp_path / "search_state.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    ckpt = SearchState(tmp_path)
    for read in (ckpt.load, ckpt.resume, lambda: ckpt.finished):
        with pytest.raises(InputError) as info:
            read()
        assert str(path) in str(info.value) and f"'{field}'" in str(info.value)


def test_a_checkpoint_of_another_identity_is_refused_naming_the_field(tmp_path: Path) -> None:
    identity = {"seed": 0, "config": {"epochs": 3, "lr": 0.1}, "dataset": {"fingerprint": "sha256:aa"}}
    ckpt = SearchState(tmp_path, identity=identity)
    ckpt.save({"epoch": 1})
    ckpt.finish({"score": 1.0})
    again = SearchState(tmp_path, identity=json.loads(json.dumps(identity)))
    assert again.inspect().finished and again.result == {"score": 1.0}
    for change, field in ((("config", "lr"), 0.2), "config.lr"), ((("dataset", "fingerprint"), "sha256:bb"),
                                                                 "dataset.fingerprint"):
        other = json.loads(json.dumps(identity))
        (outer, inner), value = change
        other[outer][inner] = value
        for read in (lambda s: s.inspect(), lambda s: s.resume(), lambda s: s.finished):
            with pytest.raises(InputError, match=rf"field '{field}': this output_dir holds a search run with"):
                read(SearchState(tmp_path, identity=other))
    with pytest.raises(InputError, match="field 'epochs'"):  # a key the saved run lacks is a difference too
        SearchState(tmp_path, identity={**identity, "epochs": 3}).inspect()


def test_missing_checkpoint_load_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="search_state.pt"):
        SearchState(tmp_path).load()


# --------------------------------------------------------------------------------- kill and resume a search loop


def _start_toy(output_dir: Path, sleep: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)])}
    code = "import sys, _toy_search; _toy_search.main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(output_dir), str(sleep)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def _epochs_logged(output_dir: Path) -> list[int]:
    log = output_dir / "epochs.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_killed_search_resumes_bit_identical(tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _start_toy(reference_dir, sleep=0.0)
    victim = _start_toy(killed_dir, sleep=0.15)

    ckpt = SearchState(killed_dir)
    deadline = time.monotonic() + 60
    epoch = 0
    while epoch < 4:
        assert victim.poll() is None, "the search ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.02)
        epoch = ckpt.load(restore_rng=False)["epoch"] if ckpt.exists() else 0
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    state = ckpt.load(restore_rng=False)
    assert 4 <= state["epoch"] < EPOCHS and not ckpt.finished
    logged_before_kill = _epochs_logged(killed_dir)
    assert len(logged_before_kill) < EPOCHS

    resumed_result = _finish(_start_toy(killed_dir, sleep=0.0))
    assert _epochs_logged(killed_dir)[len(logged_before_kill)] == state["epoch"]  # resumed, not restarted
    reference_result = _finish(reference)
    assert resumed_result == reference_result
    assert _epochs_logged(reference_dir) == list(range(EPOCHS))
    assert _epochs_logged(killed_dir)[-1] == EPOCHS - 1 and len(_epochs_logged(killed_dir)) >= EPOCHS
    # weights, optimiser states, population, history, RNG states, result: every byte of the checkpoint agrees
    _assert_same(_raw(killed_dir / "search_state.pt"), _raw(reference_dir / "search_state.pt"))
    for folder in (reference_dir, killed_dir):
        assert json.loads((folder / "search_result.json").read_text()) == reference_result
        assert sorted(os.listdir(folder)) == ["epochs.log", "search_result.json", "search_state.pt"]

    # a finished search returns its result and runs no epoch
    logged = _epochs_logged(killed_dir)
    before = _raw(killed_dir / "search_state.pt")
    assert _toy_search.run(killed_dir) == reference_result
    assert _epochs_logged(killed_dir) == logged
    _assert_same(_raw(killed_dir / "search_state.pt"), before)
