"""A cheap stand-in for MB-NAS trainings in the Local Search tests: a deterministic score from the genotype.

``budget`` may name a ``log`` file (each training appends ``start <key> <unit>`` and ``done <key> <unit>``) and a
``sleep`` in seconds between the two, so a test can kill a search in the middle of a training.
"""

from __future__ import annotations

import json
import time

from nas_ops.mbnas.space import arch_key, node_levels, parse_spec

BLOCK_GAIN = {"vgg": 0.0, "residual": 0.02, "dense": 0.01, "inception": 0.015}


def fake_score(genotype: dict, fold: int, seed: int, budget: dict) -> dict:
    """A smooth made-up score: favours some blocks, kernel 5 and skips, penalises depth; folds and seeds shift it."""
    nodes = parse_spec(genotype["spec"]).nodes
    key = arch_key(nodes)
    unit = f"fold{fold}-seed{seed}"
    log = budget.get("log")
    if log:
        with open(log, "a") as fh:
            fh.write(f"start {key} {unit}\n")
    score = 0.5 - 0.004 * max(node_levels(nodes))
    for i, n in enumerate(nodes):
        score += BLOCK_GAIN[n.block] * (i % 3 + 1) / 3 + (0.005 if n.kernel == 5 else 0.0)
        score += 0.003 if n.skip is not None else 0.0
    score += 0.001 * fold + 0.0005 * seed
    if budget.get("sleep"):
        time.sleep(budget["sleep"])
    if log:
        with open(log, "a") as fh:
            fh.write(f"done {key} {unit}\n")
    return {"score": score}


def run_search(output_dir: str, budget: int, variant: str = "mbnas", start: str = "unet", log: str = "",
               sleep: float = 0.0, seed: int = 0) -> dict:
    """A small Local Search (6 nodes, depth 3) with the fake trainings: 2 folds x 1 seed per evaluation."""
    from nas_ops.engine.execution import executor
    from nas_ops.mbnas.local_search import LocalSearch
    from nas_ops.mbnas.space import SearchSpace, make_genotype

    space = SearchSpace(num_nodes=6, max_depth=3)
    ls = LocalSearch(output_dir, space, lambda nodes: make_genotype(nodes, 1, 2, base_channels=4, max_depth=3),
                     [(0, 0), (1, 0)], variant, start, budget, seed, evaluate="_mbnas_fake.fake_score",
                     training={"log": log, "sleep": sleep})
    with executor("local") as run:
        return ls.run(run)


def main(argv: list[str]) -> None:
    """Command line for the subprocess tests: ``OUTPUT_DIR BUDGET LOG SLEEP``; prints the result as JSON."""
    result = run_search(argv[0], int(argv[1]), log=argv[2], sleep=float(argv[3]))
    print(json.dumps(result))

