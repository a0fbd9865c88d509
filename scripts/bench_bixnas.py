"""Benchmarks of the BiX-NAS code on the CPU (not run in CI): the Phase-2 shared head, and training-step speed.

python scripts/bench_bixnas.py phase2 --size 128 --samples 15 --keep 3 --repeats 3
    Per searched stage: the step time (forward + backward) of every sample run whole ("naive") against the shared
    head (stages before the searched one run once, each sample runs only its tail), beside the ratio the MAC counts
    of the two computations predict.
python scripts/bench_bixnas.py networks --size 256 --batch 2 --repeats 7
    Training-step time (forward + backward + Adam step) of BiX-Net (released genotype), BiO-Net++ (plain net),
    BiO-Net (T=3, integrate) and the Phase-1 supernet as a ratio to MONAI's
    BasicUNet(features=(32, 64, 128, 256, 512, 32)), measured in the same run with interleaved repetitions (median).
python scripts/bench_bixnas.py bionet_variants --size 256 --batch 2 --repeats 7
    The same for BiO-Net with each of its two speed choices on and off (fold_first_skip, channels-last layout).
python scripts/bench_bixnas.py layouts
    The CPU kernel timings behind the channels-last choice (conv, batch norm, a 3D step in both layouts).

All use one torch thread by default (``--threads``). Results print as markdown tables.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import fire
import numpy as np
import torch
from torch import nn

from nas_ops.bixnas.bionet import bionet_genotype
from nas_ops.bixnas.phase2 import combine, draw_stage_samples, searched_stages, shared_head_step, tails_forward
from nas_ops.bixnas.space import (
    LEVELS,
    SkipSets,
    bionet_pp_genotype,
    candidates,
    normalise_skip_sets,
    released_genotype,
    stage_name,
)
from nas_ops.bixnas.supernet import BiXSupernet
from nas_ops.cost_model import count_macs
from nas_ops.registry import build_network
from nas_ops.training.losses import make_loss


def _median_times(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each step, the steps interleaved in every repetition."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            tic = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(values) for name, values in times.items()}


def phase1_like_sets(iterations: int = 3, seed: int = 0) -> SkipSets:
    """Candidate sets as Phase 1 extracts them: per block the unique argmax of N-2 random columns."""
    rng = np.random.default_rng(seed)
    sets = []
    for s in range(2 * iterations):
        cands = candidates(s)
        sets.append([sorted({int(rng.choice(cands)) for _ in range(3)}) if s else [0] for _ in range(LEVELS)])
    return normalise_skip_sets(sets, iterations)


class _Computation(nn.Module):
    """Wraps a forward of the supernet so that the cost model counts its MACs."""

    def __init__(self, model: BiXSupernet, forward: Callable[[BiXSupernet, torch.Tensor], object]) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, x: torch.Tensor) -> object:
        return self._forward(self.model, x)


def phase2(
    size: int = 128,
    batch: int = 2,
    samples: int = 15,
    keep: int = 3,
    repeats: int = 3,
    threads: int = 1,
    seed: int = 0,
    stages: Sequence[int] | None = None,
) -> list[dict]:
    """Naive per-sample steps vs the shared head, per searched stage; measured and MAC-predicted ratios."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    phase1 = phase1_like_sets()
    model = BiXSupernet(2, 3, 2).train()
    loss_fn = make_loss("dice_ce")
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch, 1, size, size))
    population: list[SkipSets] = [phase1]
    rows = []
    print(f"| stage | architectures | naive step (s) | shared-head step (s) | measured ratio | MAC ratio |"
          f"\n|---|---|---|---|---|---|  <!-- {size}x{size}, batch {batch}, {threads} thread(s), "
          f"median of {repeats} -->")
    for stage in searched_stages(3):
        networks = combine(population, stage, draw_stage_samples(rng, phase1, stage, samples))
        if stages is None or stage in stages:
            n = len(networks)

            def naive(nets: list[SkipSets] = networks, n: int = n) -> None:
                model.zero_grad(set_to_none=True)
                for sets in nets:  # one graph at a time: the same arithmetic as mean(losses).backward()
                    (loss_fn(model.forward_fixed(x, sets), y) / n).backward()

            def shared(nets: list[SkipSets] = networks, stage: int = stage) -> None:
                model.zero_grad(set_to_none=True)
                shared_head_step(model, x, y, nets, stage, loss_fn)

            t = _median_times({"naive": naive, "shared": shared}, repeats)
            shape = (3, size, size)
            naive_macs = sum(count_macs(_Computation(model, lambda m, v, s=sets: m.forward_fixed(v, s)), shape)
                             for sets in networks)
            shared_macs = count_macs(_Computation(model, lambda m, v, nets=networks, s=stage:
                                                  tails_forward(m, v, nets, s)), shape)
            row = {"stage": stage_name(stage), "architectures": n, "naive_s": t["naive"], "shared_s": t["shared"],
                   "measured_ratio": t["naive"] / t["shared"], "mac_ratio": naive_macs / shared_macs}
            rows.append(row)
            print(f"| {stage} ({row['stage']}) | {n} | {t['naive']:.3f} | {t['shared']:.3f} | "
                  f"{row['measured_ratio']:.2f} | {row['mac_ratio']:.2f} |", flush=True)
        population = networks[:keep]  # the next stage searches below some retained architectures
    return rows


def _step_ratios(nets: dict[str, nn.Module], size: int, batch: int, repeats: int, threads: int,
                 targets: dict[str, float]) -> dict[str, float]:
    """Print the training-step time of every network as a ratio to the first one (same run, interleaved)."""
    torch.set_num_threads(threads)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch, size, size))
    steps = {}
    for name, net in nets.items():
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(net: nn.Module = net, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

        net.train()
        steps[name] = step
    t = _median_times(steps, repeats)
    macs = {name: count_macs(net, (3, size, size)) for name, net in nets.items()}
    base_name = next(iter(nets))
    base, base_macs = t[base_name], macs[base_name]
    print(f"| network | step (s) | ratio to {base_name.split('(')[0]} | target | GMACs per image | MAC ratio |\n"
          f"|---|---|---|---|---|---|  <!-- {size}x{size}, batch {batch}, {threads} thread(s), "
          f"median of {repeats} interleaved -->")
    for name, seconds in t.items():
        target = f"<= {targets[name]:.2f}" if name in targets else ""
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} | {target} | {macs[name] / 1e9:.2f} | "
              f"{macs[name] / base_macs:.2f} |")
    return {name: seconds / base for name, seconds in t.items()}


def _basic_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(2, 3, 2, features=(32, 64, 128, 256, 512, 32))


def networks(size: int = 256, batch: int = 2, repeats: int = 7, threads: int = 1, seed: int = 0) -> dict[str, float]:
    """Training-step time of BiX-Net, BiO-Net++, BiO-Net and the Phase-1 supernet (selection matrices, Gumbel
    sampling) as a ratio to MONAI's BasicUNet (same run)."""
    torch.manual_seed(seed)
    nets: dict[str, nn.Module] = {
        "BasicUNet(32..512)": _basic_unet(),
        "BiX-Net (released)": build_network(released_genotype()),
        "BiO-Net++": build_network(bionet_pp_genotype()),
        "BiO-Net (T=3, integrate)": build_network(bionet_genotype()),
        "BiO-Net++ supernet (Phase 1)": BiXSupernet(2, 3, 2),
    }
    targets = {"BiX-Net (released)": 0.66, "BiO-Net++": 1.26, "BiO-Net (T=3, integrate)": 1.70}
    return _step_ratios(nets, size, batch, repeats, threads, targets)


def bionet_variants(size: int = 256, batch: int = 2, repeats: int = 7, threads: int = 1,
                    seed: int = 0) -> dict[str, float]:
    """BiO-Net's training step with and without its two implementation choices (fold_first_skip, channels-last
    layout), as a ratio to MONAI's BasicUNet (same run): what each choice is worth."""
    torch.manual_seed(seed)
    nets: dict[str, nn.Module] = {"BasicUNet(32..512)": _basic_unet()}
    for fold in (False, True):
        for channels_last in (False, True):
            net = build_network(bionet_genotype(fold_first_skip=fold))
            net.channels_last = channels_last
            nets[f"BiO-Net fold_first_skip={fold}, {'channels-last' if channels_last else 'channels-first'}"] = net
    return _step_ratios(nets, size, batch, repeats, threads, {})


def layouts(repeats: int = 9, threads: int = 1) -> dict[str, float]:
    """The CPU kernel timings behind the channels-last choice: milliseconds of forward + backward of a conv and of
    a batch norm at 2x32x256^2 in both layouts (the batch norm also with a gradient in the other layout), and a
    3D BiO-Net step (multiplier 0.5, batch 2 of 1x64^3) in channels-first and channels-last-3D layout."""
    from nas_ops.bixnas.bionet import BiONet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    last, first = torch.channels_last, torch.contiguous_format
    conv, bn = nn.Conv2d(96, 32, 3, padding=1), nn.BatchNorm2d(32)
    x96, x32, g32 = torch.randn(2, 96, 256, 256), torch.randn(2, 32, 256, 256), torch.randn(2, 32, 256, 256)

    def conv_step(fmt: torch.memory_format) -> Callable[[], None]:
        x, g = x96.contiguous(memory_format=fmt).requires_grad_(), g32.contiguous(memory_format=fmt)
        return lambda: conv(x).backward(g)

    def bn_forward(fmt: torch.memory_format) -> Callable[[], None]:
        x = x32.contiguous(memory_format=fmt)
        return lambda: bn(x)

    def bn_backward(fmt: torch.memory_format, grad_fmt: torch.memory_format) -> Callable[[], None]:
        x = x32.contiguous(memory_format=fmt).requires_grad_()
        y, g = bn(x), g32.contiguous(memory_format=grad_fmt)
        return lambda: torch.autograd.grad(y, x, g, retain_graph=True)

    kernels = {
        "conv 96->32 at 2x256^2, forward + backward, channels-first": conv_step(first),
        "conv 96->32 at 2x256^2, forward + backward, channels-last": conv_step(last),
        "batch norm forward 2x32x256^2, channels-first": bn_forward(first),
        "batch norm forward 2x32x256^2, channels-last": bn_forward(last),
        "batch norm backward, channels-last input and gradient": bn_backward(last, last),
        "batch norm backward, channels-last input, channels-first gradient": bn_backward(last, first),
    }
    ms = {name: 1e3 * t for name, t in _median_times(kernels, repeats).items()}

    class _Last3d(BiONet):  # the same network with its input (hence every activation) in channels-last-3D
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.contiguous(memory_format=torch.channels_last_3d))

    x3, y3 = torch.randn(2, 1, 64, 64, 64), torch.randint(0, 2, (2, 64, 64, 64))
    steps = {}
    for name, cls in (("3D BiO-Net step, channels-first", BiONet), ("3D BiO-Net step, channels-last-3D", _Last3d)):
        net = cls(3, 1, 2, multiplier=0.5).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(net: nn.Module = net, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x3), y3).backward()
            opt.step()

        steps[name] = step
    ms.update({name: 1e3 * t for name, t in _median_times(steps, max(3, repeats // 3)).items()})
    print("| kernel | ms |\n|---|---|")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} |")
    return ms


if __name__ == "__main__":
    fire.Fire({"phase2": phase2, "networks": networks, "bionet_variants": bionet_variants, "layouts": layouts})
