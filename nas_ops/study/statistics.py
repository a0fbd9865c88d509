"""The statistics of a comparison: one module for the study and for the nnU-Net harness.

Every test takes a ``(models, blocks)`` table of per-block scores; a block is the unit of pairing (a test case, its
score averaged over training seeds and folds: the cases are the independent samples, the seeds repeat
measurements of the same case, so pooling case x seed would count one case several times and overstate n).

- :func:`friedman`: Friedman's test across all models (scipy's ``friedmanchisquare``), blocks = cases.
- :func:`wilcoxon`: a two-sided Wilcoxon signed-rank test of one model against another, paired by block (scipy).
- :func:`holm`: Holm's step-down adjustment of a family of p-values (the comparisons of one found network with
  every baseline and with the random control form one family).
- :func:`compare_family`: the Wilcoxon tests of one model against several, Holm-adjusted.
- :func:`rank_among`: where one score falls among others (the found network among random architectures).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test: statistic and p (``p_holm`` once adjusted), or why it was not computed."""

    name: str
    statistic: float | None
    p: float | None
    n: int
    note: str = ""
    p_holm: float | None = None
    mean_difference: float | None = None  # first minus second, for paired tests

    @property
    def p_final(self) -> float | None:
        """The p-value to judge by: Holm-adjusted when the test belongs to a family."""
        return self.p_holm if self.p_holm is not None else self.p

    @property
    def significant(self) -> bool:
        return self.p_final is not None and self.p_final < ALPHA

    def verdict(self) -> str:
        """``significant`` or ``not significant`` at 0.05, said plainly (or why there is no test)."""
        if self.p_final is None:
            return f"no test ({self.note})"
        return "significant" if self.significant else "not significant"

    def text(self) -> str:
        if self.p is None:
            return f"{self.name}: not computed ({self.note})"
        holm_text = f", Holm-adjusted p = {self.p_holm:.4g}" if self.p_holm is not None else ""
        extra = f"; {self.note}" if self.note else ""
        return (f"{self.name}: statistic {self.statistic:.4g}, p = {self.p:.4g}{holm_text} (n = {self.n}{extra}): "
                f"{self.verdict()}")


def friedman(scores: np.ndarray, name: str = "Friedman (models x cases)") -> TestResult:
    """Friedman test across models (rows), blocks = cases (columns)."""
    scores = np.asarray(scores, dtype=float)
    k, n = scores.shape
    if k < 3:
        return TestResult(name, None, None, n, f"not applicable: needs >= 3 models, got {k}; see the Wilcoxon tests")
    if n < 2:
        return TestResult(name, None, None, n, f"needs >= 2 paired cases, got {n}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.friedmanchisquare(*scores)
    if not np.isfinite(res.pvalue):
        return TestResult(name, None, None, n, "every case ties across models")
    return TestResult(name, float(res.statistic), float(res.pvalue), n, f"chi2({k - 1})")


def wilcoxon(model: Sequence[float], reference: Sequence[float], label: str, ref_label: str) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of per-case scores of ``model`` against ``reference`` (paired)."""
    model, reference = np.asarray(model, dtype=float), np.asarray(reference, dtype=float)
    name = f"Wilcoxon {label} vs {ref_label}"
    n = len(model)
    if n < 1:
        return TestResult(name, None, None, n, "no paired cases")
    diff = model - reference
    if np.all(diff == 0):
        return TestResult(name, None, None, n, "every paired difference is zero", mean_difference=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
        res = stats.wilcoxon(model, reference)
    if not np.isfinite(res.pvalue):
        return TestResult(name, None, None, n, "not computable for these differences")
    wins, ties = int((diff > 0).sum()), int((diff == 0).sum())
    tied = f", {ties} tie(s) left out" if ties else ""
    return TestResult(name, float(res.statistic), float(res.pvalue), n - ties,
                      f"mean difference {diff.mean():+.4f}, better on {wins} of {n} cases{tied}",
                      mean_difference=float(diff.mean()))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted in the family)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_family(model: Sequence[float], others: dict[str, Sequence[float]], label: str) -> list[TestResult]:
    """Wilcoxon tests of ``model`` against each of ``others`` (same blocks), Holm-adjusted as one family."""
    tests = [wilcoxon(model, scores, label, name) for name, scores in others.items()]
    adjusted = holm([t.p for t in tests])
    return [replace(t, p_holm=a) for t, a in zip(tests, adjusted, strict=True)]


@dataclass(frozen=True)
class Rank:
    """Where a score falls among others: 1 is the best (highest), ``of`` counts the others plus itself."""

    rank: int
    of: int
    median: float
    beats_median: bool

    def text(self, what: str = "random architectures") -> str:
        return (f"rank {self.rank} of {self.of} among the {what} (their median {self.median:.4f}); "
                f"{'above' if self.beats_median else 'not above'} the median")


def rank_among(value: float, others: Sequence[float]) -> Rank:
    """The rank of ``value`` among ``others`` (higher is better; ties count against it) and their median; a value
    that is not a number ranks last."""
    finite = [o for o in others if not math.isnan(o)]
    if math.isnan(value):
        median = float(np.median(finite)) if finite else math.nan
        return Rank(len(finite) + 1, len(finite) + 1, median, False)
    rank = 1 + sum(o >= value for o in finite)
    median = float(np.median(finite)) if finite else math.nan
    return Rank(rank, len(finite) + 1, median, bool(finite) and value > median)
