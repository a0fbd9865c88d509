"""A toy search for the search-state tests: a tiny supernet, an architecture parameter and a mutated population.

Every RNG kind is used (python ``random``, numpy global, a numpy Generator, torch global, a torch Generator), so a
resume is bit-identical only if every RNG state is restored. Each epoch run appends a line to ``epochs.log``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas_ops.search_state import SearchState


class ToySupernet(nn.Module):
    """Two candidate ops mixed by softmax(alpha), DARTS-style: (B, 8) -> (B, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.ops = nn.ModuleList([nn.Linear(16, 16), nn.Sequential(nn.Linear(16, 16), nn.Tanh())])
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(16, 2)
        self.alpha = nn.Parameter(torch.zeros(2))

    def weights(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        w = torch.softmax(self.alpha, dim=0)
        h = sum(wi * op(h) for wi, op in zip(w, self.ops, strict=True))
        return self.head(self.drop(h))


def run(output_dir: str | Path, epochs: int = 20, sleep: float = 0.0) -> dict[str, Any]:
    """Run (or resume, or return the result of) the toy search in ``output_dir``."""
    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    mutation_rng = np.random.default_rng(1)
    noise_gen = torch.Generator().manual_seed(2)

    x = torch.randn(64, 8)
    y = (x[:, 0] + x[:, 1] > 0).long()
    net = ToySupernet()
    w_opt = torch.optim.SGD(net.weights(), lr=0.05, momentum=0.9)
    a_opt = torch.optim.Adam([net.alpha], lr=0.01)
    scale = torch.ones(1)  # a bare tensor in the checkpoint, copied in place on resume
    population = [{"width": random.choice([8, 16, 32]), "score": 0.0} for _ in range(4)]
    history: list[dict[str, Any]] = []

    ckpt = SearchState(output_dir)
    objects = {"net": net, "w_opt": w_opt, "a_opt": a_opt, "scale": scale}
    generators = {"mutation": mutation_rng, "noise": noise_gen}
    resumed = ckpt.resume(objects, generators=generators)
    if resumed.finished:
        return resumed.result
    start = resumed.state.get("epoch", 0)
    population = resumed.state.get("population", population)
    history = resumed.state.get("history", history)

    log = Path(output_dir) / "epochs.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, epochs):
        with log.open("a") as fh:
            fh.write(f"{epoch}\n")
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 16):
            idx = perm[i : i + 16]
            xb = x[idx] + 0.1 * torch.randn(len(idx), 8, generator=noise_gen)
            loss = loss_fn(net(xb) * scale, y[idx])
            w_opt.zero_grad()
            a_opt.zero_grad()
            loss.backward()
            w_opt.step()
            a_opt.step()
        scale.mul_(0.99)
        parent = random.randrange(len(population))
        child = dict(population[parent])
        child["width"] = int(max(4, child["width"] + mutation_rng.integers(-4, 5)))
        child["score"] = float(-loss.item() + 0.01 * np.random.rand())
        population = sorted([*population, child], key=lambda m: m["score"], reverse=True)[:4]
        history.append({"epoch": epoch, "loss": loss.item(), "alpha": net.alpha.tolist()})
        ckpt.save(
            {"epoch": epoch + 1, "phase": "search", "population": population, "history": history},
            objects=objects,
            generators=generators,
        )
        time.sleep(sleep)

    result = {"score": population[0]["score"], "alpha": net.alpha.tolist(), "population": population}
    ckpt.finish(result)
    return result


def main(argv: list[str]) -> None:
    """Command line for the subprocess tests: ``OUTPUT_DIR [SLEEP]``; prints the result as JSON."""
    sleep = float(argv[1]) if len(argv) > 1 else 0.0
    print(json.dumps(run(argv[0], sleep=sleep)))
