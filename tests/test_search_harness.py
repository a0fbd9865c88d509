"""The shape of the library around the one search harness: every method package holds the same files, no method
imports another, the core names no method, every search is declared to the harness, and each bundle's ``search``
block shows exactly the defaults of its method's config class (one place for every default)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from nas_ops.config import json_ready
from nas_ops.search_run import get_searcher

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
