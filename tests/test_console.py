"""The install gives the commands: every console script the package declares is on the PATH of the environment it
was installed into and answers ``--help``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_package_declares_the_commands():
    assert set(SCRIPTS) == {"medseg-nas-study", "medseg-nas-zoo", "medseg-nas-nnunet-export",
                            "medseg-nas-nnunet-compare"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_command_answers_help(name):
    command = Path(sys.executable).parent / name
    assert command.is_file(), f"{command}: not installed (pip install -e .)"
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PAGER": "cat"})
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout + done.stderr  # fire writes its help to stderr when no terminal reads it
    assert "NAME" in text and name in text and "SYNOPSIS" in text, text[:500]
