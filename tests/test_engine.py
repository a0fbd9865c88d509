"""The run engine, its steps, the config checker and the execution layer: a step that learns, resume equality,
rank-aware writing, the sampled-path step, one job giving one result on every backend, failures named."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pytest
import torch
from torch import nn

from nas_ops.config import ConfigBlock, PositiveInt, Rule, check_value, checked
from nas_ops.engine.execution import Job, executor, locate
from nas_ops.engine.loop import RunCheckpoint, RunEngine
from nas_ops.engine.steps import SampledPathStep, SupervisedStep
from nas_ops.errors import InputError
from nas_ops.search_state import SearchState

# -- a toy task: 2 classes from the sign of the first feature, batches of a fixed generator ------------------


def _batches(epoch: int):
    g = torch.Generator().manual_seed(1000 + epoch)
    for _ in range(4):
        x = torch.randn(8, 4, generator=g)
        yield {"image": x, "label": (x[:, :1] > 0).long()}


def _ce(logits, label):
    return nn.functional.cross_entropy(logits, label[:, 0])


def _engine(checkpoint=None, validate=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    if checkpoint is not None:
        checkpoint.objects.update(model=model, optimiser=opt, scheduler=sched)
    return RunEngine(SupervisedStep(model, _ce, opt), _batches, torch.device("cpu"), scheduler=sched,
                     validate=validate, checkpoint=checkpoint, desc="toy"), model


def test_the_engine_trains_a_step_steps_the_scheduler_and_validates_when_asked():
    engine, model = _engine(validate=lambda epoch: {"val": float(epoch)})
    engine.validate_every = lambda epoch: epoch % 2 == 1
    rows = engine.run(range(6))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in rows] == [0.02, 0.02, 0.01, 0.01, 0.005, 0.005]
    assert [("val" in r) for r in rows] == [False, True] * 3
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"]  # it learns


def test_a_run_stopped_between_epochs_resumes_to_the_same_numbers(tmp_path):
    straight, model_a = _engine()
    want = straight.run(range(5))

    def run(stop_after: int | None):
        ckpt = RunCheckpoint(SearchState(tmp_path, identity={"toy": 1}))
        engine, model = _engine(ckpt)
        resumed = ckpt.resume()
        history = resumed.state.get("history", [])

        def on_epoch(row):
            history.append(row)
            if stop_after is not None and len(history) == stop_after:
                ckpt.save({"history": history})
                raise KeyboardInterrupt
            return {"history": history}

        engine.run(range(len(history), 5), on_epoch)
        return history, model

    with pytest.raises(KeyboardInterrupt):
        run(stop_after=2)
    got, model_b = run(stop_after=None)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(got) == strip(want)
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(),
                                                 strict=True))


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    ckpt = RunCheckpoint(SearchState(tmp_path / "run"))
    engine, _ = _engine(ckpt)
    engine.run(range(1), lambda row: {"history": [row]})
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("RANK", "0")
    engine.run(range(1), lambda row: {"history": [row]})
    assert (tmp_path / "run" / "search_state.pt").is_file()


class _TwoPathSupernet(nn.Module):
    """A supernet of two paths: ``forward(x, path)`` runs path 0 or 1 only."""

    def __init__(self):
        super().__init__()
        self.paths = nn.ModuleList([nn.Linear(4, 2), nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))])

    def forward(self, x, path):
        return self.paths[path](x)


def test_the_sampled_path_step_trains_only_the_path_it_draws_and_draws_from_its_own_generator():
    torch.manual_seed(0)
    net = _TwoPathSupernet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    step = SampledPathStep(net, _ce, opt, lambda rng: int(rng.integers(2)), np.random.default_rng(5))
    drawn = []
    for batch in _batches(0):
        before = [p.detach().clone() for p in net.parameters()]
        step(batch["image"], batch["label"])
        drawn.append(step.last_path)
        changed = [not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True)]
        other = 1 - step.last_path
        assert not any(changed[i] for i, p in enumerate(net.parameters())
                       if any(p is q for q in net.paths[other].parameters()))
    assert drawn == [int(v) for v in np.random.default_rng(5).integers(2, size=4)]


# -- the config checker ----------------------------------------------------------------------------------------


def test_values_are_checked_against_their_types_and_rules():
    size = Annotated[list[int], Rule(min=1, length=2, multiple_of=32, why="4 poolings")]
    assert check_value("spatial_size", (64, 96), size) == [64, 96]
    for value, words in (([64, 100], "divisible by 32"), ([64], "2 entries"), ("abc", "a list of integers")):
        with pytest.raises(InputError, match=f"cfg.json: field 'spatial_size': .*{words}"):
            check_value("spatial_size", value, size, "cfg.json")
    assert check_value("n", None, PositiveInt | None) is None
    with pytest.raises(InputError, match="must be >= 1, got 0"):
        check_value("n", 0, PositiveInt | None)
    with pytest.raises(InputError, match="must be an integer, got True"):
        check_value("n", True, PositiveInt)
    with pytest.raises(InputError, match="must be one of 'a', 'b'"):
        check_value("mode", "c", Literal["a", "b"])
    assert check_value("lr", 1, float) == 1.0 and isinstance(check_value("lr", 1, float), float)


def test_a_config_block_refuses_an_unknown_key_with_the_nearest_one():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Block(ConfigBlock):
        epochs: PositiveInt = 3
        width: PositiveInt = 8

    assert Block.from_values({"epochs": 5}).as_dict() == {"epochs": 5, "width": 8}
    with pytest.raises(InputError, match=r"search.json: field 'search#epohcs': unknown key \(did you mean 'epochs'"):
        Block.from_values({"epohcs": 5}, "search.json", prefix="search#")


def test_an_entry_function_checks_its_arguments_by_their_hints():
    @checked
    def train(epochs: PositiveInt = 1, device: str = "cpu") -> int:
        return epochs

    assert train(epochs=4) == 4
    with pytest.raises(InputError, match=r"train.json: field 'epochs': must be >= 1, got 0"):
        train(epochs=0, config_source="train.json")
    with pytest.raises(InputError, match=r"train\(\): field 'epochs': must be an integer, got 'abc'"):
        train(epochs="abc")


# -- the execution layer ---------------------------------------------------------------------------------------


def job_square(x: int, fail: bool = False, sleep: float = 0.0, bad: bool = False) -> dict:
    """A job for the backends (module-level: reachable by its dotted path in any process)."""
    import time

    time.sleep(sleep)
    if fail:
        raise ValueError(f"job {x} failed on purpose")
    if bad:
        raise InputError("data/dataset.json", "labels", "missing key")
    torch.manual_seed(x)
    return {"x": x, "value": float(torch.rand(1))}


def test_the_same_jobs_give_the_same_results_in_process_and_in_subprocesses(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    jobs = [Job("test_engine.job_square", {"x": x}, tag=x) for x in range(3)]
    results = {}
    for backend in ("local", "subprocess"):
        with executor(backend, parallel_jobs=2) as run:
            results[backend] = {job.tag: result for job, result in run(jobs)}
    assert results["local"] == results["subprocess"] and sorted(results["local"]) == [0, 1, 2]


def test_a_failing_or_hanging_job_stops_the_run_naming_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    log = tmp_path / "job.log"
    with executor("subprocess") as run, pytest.raises(RuntimeError, match=f"failed .*log: {log}"):
        list(run([Job("test_engine.job_square", {"x": 1, "fail": True}, tag="one", log=str(log))]))
    assert "job 1 failed on purpose" in log.read_text()
    for backend in ("local", "subprocess"):  # bad input inside a job: the job's own one-line error
        with executor(backend) as run, pytest.raises(InputError) as info:
            list(run([Job("test_engine.job_square", {"x": 1, "bad": True})]))
        assert str(info.value) == "data/dataset.json: field 'labels': missing key"
    with executor("subprocess", timeout_s=2) as run, pytest.raises(TimeoutError, match="ran past 2 s"):
        list(run([Job("test_engine.job_square", {"x": 1, "sleep": 60}, tag="slow")]))
    with pytest.raises(InputError, match="field 'backend': must be one of"):
        with executor("slurm"):
            pass
    with pytest.raises(InputError, match="names no importable function"):
        locate("nas_ops.nowhere.train")
