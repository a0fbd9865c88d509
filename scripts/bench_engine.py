"""What the run engine costs (not run in CI): an epoch through ``RunEngine`` against the same epoch as a bare
hand-written loop, the two interleaved in one run (this machine is noisy: read the ratio).

python scripts/bench_engine.py --size 128 --batch 4 --batches 8 --repeats 7

Both train the same network (a U-Net genotype, widths 16..128) with the same Adam step on the same in-memory
batches; the engine adds its progress bars, the per-epoch scheduler step, the log line and (with ``--checkpoint``)
the atomic per-epoch checkpoint of model, optimiser, scheduler and RNG states. Prints a markdown table.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from nas_ops.baselines.unet import unet_genotype
from nas_ops.engine.loop import RunCheckpoint, RunEngine
from nas_ops.engine.steps import SupervisedStep
from nas_ops.entry import fire_main
from nas_ops.registry import build_network
from nas_ops.search_state import SearchState
from nas_ops.training.losses import make_loss


def bench(size: int = 128, batch: int = 4, batches: int = 8, repeats: int = 7, threads: int = 1,
          checkpoint: bool = True) -> dict:
    """Median seconds per epoch of the bare loop and of the engine, and their ratio."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = [{"image": torch.randn(batch, 1, size, size), "label": torch.randint(0, 3, (batch, 1, size, size))}
            for _ in range(batches)]
    genotype = unet_genotype(2, 1, 3, features=[16, 32, 64, 128])
    model = build_network(genotype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=1000, power=0.9)
    loss_fn = make_loss("dice_ce")
    device = torch.device("cpu")

    def bare() -> None:
        model.train()
        for b in data:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(b["image"]), b["label"])
            loss.backward()
            opt.step()
        sched.step()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = RunCheckpoint(SearchState(tmp, identity={"bench": 1}), {"model": model, "optimiser": opt,
                                                                       "scheduler": sched}) if checkpoint else None
        engine = RunEngine(SupervisedStep(model, loss_fn, opt), lambda epoch: data, device, scheduler=sched,
                           checkpoint=ckpt, desc="bench", num_batches=batches)
        epoch = [0]

        def with_engine() -> None:
            engine.run(range(epoch[0], epoch[0] + 1), lambda row: {"history": [row]}, total=10**6)
            epoch[0] += 1

        times: dict[str, list[float]] = {"bare loop": [], "run engine": []}
        for fn in (bare, with_engine):  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in (("bare loop", bare), ("run engine", with_engine)):
                tic = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - tic)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["run engine"] / med["bare loop"]
    print(f"| loop | epoch of {batches} batches of {batch}x1x{size}x{size} (s) | ratio |")
    print("|---|---|---|")
    for name, t in med.items():
        print(f"| {name}{' (with per-epoch checkpoint)' if name == 'run engine' and checkpoint else ''} | "
              f"{t:.3f} | {t / med['bare loop']:.3f} |")
    return {"median_seconds": med, "ratio": ratio}


if __name__ == "__main__":
    fire_main(bench)
