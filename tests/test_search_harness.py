"""The one search harness and the shape of the library around it: the harness checks everything before it writes
and writes a finished search's files only when they change; every method package holds the same files, no method
imports another, the core names no method, every search is declared to the harness, and each bundle's ``search``
block shows exactly the defaults of its method's config class (one place for every default)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from nas_ops.baselines.unet import unet_genotype
from nas_ops.config import ConfigBlock, PositiveInt, json_ready
from nas_ops.data import make_nuclei_dataset
from nas_ops.errors import InputError
from nas_ops.genotype import Genotype
from nas_ops.registry import build_network
from nas_ops.search_run import MemoryProbe, SearchOutcome, get_searcher, open_search

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nas_ops"
METHODS = ("bixnas", "mbnas", "c2fnas", "dints")
SHAPE = ("config.py", "space.py", "network.py", "search.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def code_strings(path: Path) -> list[str]:
    """The string constants of a file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_package_has_the_same_shape(method):
    folder = PACKAGE / method
    assert [name for name in SHAPE if not (folder / name).is_file()] == []
    searcher = get_searcher(method)  # declared under medseg_nas.searches
    assert searcher.config_class.__module__ == f"nas_ops.{method}.config"
    assert type(searcher).__module__ == f"nas_ops.{method}.search"


@pytest.mark.parametrize("method", METHODS)
def test_no_method_imports_another(method):
    others = [m for m in METHODS if m != method]
    for path in sorted((PACKAGE / method).glob("*.py")):
        bad = [m for m in imported_modules(path) if any(m == f"nas_ops.{o}" or m.startswith(f"nas_ops.{o}.")
                                                       for o in others)]
        assert bad == [], (path.name, bad)


def test_the_core_imports_and_names_no_method():
    core = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in METHODS]
    assert len(core) > 20
    for path in core:
        bad = [m for m in imported_modules(path) if m.split(".")[:2] in [["nas_ops", m2] for m2 in METHODS]]
        assert bad == [], (path, bad)
        named = [s for s in code_strings(path) if any(m in s.lower() for m in METHODS)]
        assert named == [], (path, named)


@pytest.mark.parametrize(("config", "method"), [
    ("bundles/bixnas/configs/search.json", "bixnas"),
    ("bundles/mbnas/configs/search.json", "mbnas"),
    ("bundles/c2fnas/configs/search.json", "c2fnas"),
    ("bundles/c2fnas/configs/dints.json", "dints"),
])
def test_each_bundle_search_block_shows_its_config_defaults(config, method):
    doc = json.loads((ROOT / config).read_text())
    cls = get_searcher(method).config_class
    defaults = json_ready({f.name: f.default for f in dataclasses.fields(cls)})
    assert doc["search"] == defaults
    named = doc.get("searcher", {}).get("method") or doc.get("searcher#method")
    assert named == method


# -- the harness's opening and ending, with a toy method ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToyConfig(ConfigBlock):
    width: PositiveInt = 4


class ToySearcher:
    """A method that 'finds' a U-Net of ``width`` and draws one plot per finish that writes a genotype."""

    name = "Toy"
    config_class = ToyConfig
    spatial_dims = None
    bundle = "none"
    overlays = {"demo": (), "paper": ()}
    train_overlays = {"demo": (), "paper": ()}

    def __init__(self) -> None:
        self.drawn = 0

    def memory_probe(self, cfg, ds, prefix):
        return MemoryProbe(lambda: build_network(self.genotype(cfg, ds)), (ds.in_channels, 16, 16), 1,
                           f"{prefix}width", "the toy's training", batch_key=f"{prefix}width")

    @staticmethod
    def genotype(cfg, ds):
        return unet_genotype(2, ds.in_channels, ds.num_classes, features=[cfg.width, 2 * cfg.width])

    def run(self, run):
        run.begin()

        def draw(folder):
            self.drawn += 1
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "plot.txt").write_text(str(self.drawn))

        genotype = self.genotype(run.config, run.dataset).replace(provenance=run.provenance(score=1.0))
        return SearchOutcome({"width": run.config.width}, genotype, draw)


def test_the_harness_checks_everything_first_and_writes_only_what_changed(tmp_path):
    data = make_nuclei_dataset(tmp_path / "data", num_images=4, size=32)
    toy, out = ToySearcher(), tmp_path / "run"

    def search(**kw):
        run = open_search(toy, data, out, **{"device": "cpu", "n_folds": 2, **kw})
        return run.finish(toy.run(run))

    with pytest.raises(InputError, match=r"field 'fold': must be < n_folds = 2, got 2"):
        search(fold=2)
    with pytest.raises(InputError, match=r"field 'search#widht': unknown key \(did you mean 'width'\?\)"):
        search(config={"widht": 3})
    with pytest.raises(InputError, match=r"field 'width': the toy's training needs about"):
        search(memory_limit_gb=1e-6)
    with pytest.raises(InputError, match="no such folder"):
        open_search(toy, tmp_path / "missing", out, device="cpu")
    with pytest.raises(InputError, match=r"field 'training': 4 patient\(s\) cannot fill 5 folds"):
        search(n_folds=5)
    assert not out.exists()  # nothing written before every check passed
    summary = search(width=4)
    genotype = Genotype.load(out / "genotype.json")
    assert genotype.spec["features"] == [4, 8] and genotype.provenance["method"] == "Toy"
    assert genotype.provenance["dataset"]["fingerprint"].startswith("sha256:") and genotype.provenance["score"] == 1.0
    assert json.loads((out / "search_summary.json").read_text()) == summary and summary["width"] == 4
    assert (out / "plots" / "plot.txt").read_text() == "1"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert search(width=4) == summary  # finished: reported; genotype, summary and plots left as they are
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before and toy.drawn == 1
    search(width=6)  # a toy without a checkpoint: another result is written, its plots drawn again
    assert Genotype.load(out / "genotype.json").spec["features"] == [6, 12] and toy.drawn == 2
    assert json.loads((out / "search_summary.json").read_text())["width"] == 6
    (out / "search_method.json").write_text(json.dumps({"method": "Other"}))
    with pytest.raises(InputError, match=r"search_method.json: field 'method': .* holds a Other search"):
        search(width=4)
