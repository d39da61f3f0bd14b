"""One version: the installed package's metadata, ``__version__`` and ``--version`` agree."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from service import __version__
from tests.conftest import REPO_ROOT


def test_one_version_everywhere() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"ecswatch {__version__}"
    assert version("ecswatch") == __version__
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{__version__}]" in changelog
