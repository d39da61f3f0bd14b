"""The previous release works on the schema this release migrates to.

Migrations follow expand/contract (docs/deploy.md, "Upgrade and roll back"): a
release adds what it needs and drops what the previous release used only a
release later, so ECS's automatic rollback (or a rollback by hand) can run the
previous image on the newer schema. This test checks that rule on real code: it
takes the previous release from the repository's history (the newest ``v*``
tag that is not this version; without one, the commit before the newest
migration came in), migrates a database to head with this release, writes
events with this release, then runs the previous release's own ``ecswatch
replay`` and API (``ecswatch run --roles api``) on it, in subprocesses that
import the previous release's code and this environment's dependencies.

scripts/test runs the suite from an export without ``.git``; it names the
repository and the commit it exported in ``ECSWATCH_TEST_GIT_REPO`` and
``ECSWATCH_TEST_GIT_REVISION``. Without either, the test uses the checkout it
runs from and its ``HEAD``, and it skips only when there is no git history.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from service import __version__
from service.db import create_engine
from service.migrate import alembic_config, head_revisions, upgrade
from tests.conftest import REPO_ROOT

SAMPLES = REPO_ROOT / "tests" / "fixtures" / "ecs-events"
#: Replayed by this release first: the previous release must read what it wrote.
NEW_RELEASE_EVENTS = (
    "task_state_change_fargate_running_2025.json",
    "deployment_state_change_in_progress.json",
    "deployment_state_change_failed_circuit_breaker.json",
    "container_instance_state_change_active.json",
)
#: Replayed by the previous release on the migrated schema.
OLD_RELEASE_EVENTS = (
    "task_state_change_ec2_running_2025.json",
    "service_action_steady_state.json",
    "deployment_state_change_completed.json",
    "container_instance_health_change_daemon_impaired.json",
)
READ_ROUTES = (
    "/v1/clusters",
    "/v1/services",
    "/v1/deployments",
    "/v1/tasks",
    "/v1/container-instances",
    "/v1/events",
    "/v1/alerts",
    "/v1/quarantine",
    "/v1/webhooks",
)
ADMIN_TOKEN = "admin:previous-release-admin-token"

#: Runs the previous release's command line. The editable install of this
#: checkout is taken off the import path so that ``service`` (and its
#: migrations) are the previous release's, from PYTHONPATH.
DRIVER = """\
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
old_tree = sys.argv[1]
import service
from service import cli, migrate

if not service.__file__.startswith(old_tree):
    sys.exit(f"imported service from {service.__file__}, not from {old_tree}")
if not hasattr(migrate, "unknown_revisions"):
    # Releases up to 0.1.0 refuse to start on a schema newer than their own
    # migrations (docs/deploy.md: roll back to them with `db downgrade` first).
    # What this test checks is their reads and writes on the newer schema, so
    # their start-up migration step is left out; later releases run it as is.
    async def upgrade(engine, revision="head"):
        return None

    migrate.upgrade = upgrade
sys.exit(cli.main(sys.argv[2:]))
"""


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise LookupError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def _repository() -> tuple[Path, str]:
    """The git repository and the commit under test; skip when there is no history."""
    repo = Path(os.environ.get("ECSWATCH_TEST_GIT_REPO") or REPO_ROOT)
    revision = os.environ.get("ECSWATCH_TEST_GIT_REVISION") or "HEAD"
    if shutil.which("git") is None:
        pytest.skip("no git on this machine: the previous release comes from the git history")
    try:
        top = Path(_git(repo, "rev-parse", "--show-toplevel")).resolve()
        commit = _git(repo, "rev-parse", "--verify", f"{revision}^{{commit}}")
    except LookupError:
        pytest.skip(
            f"{repo} has no git history (an export or an installed package): "
            "set ECSWATCH_TEST_GIT_REPO to a clone to run this test"
        )
    if top != repo.resolve():
        pytest.skip(f"{repo} is not the top of a git repository ({top} is)")
    return repo, commit


def previous_release(repo: Path, commit: str) -> tuple[str, str]:
    """The commit of the previous release, and how it was chosen.

    The newest ``v*`` tag reachable from ``commit`` that is neither this version
    nor on ``commit`` itself; without one, the first parent of the commit that
    brought the newest migration into ``commit``'s first-parent history (or
    ``commit`` itself, when that migration is not committed yet).
    """
    tags = _git(repo, "tag", "--merged", commit, "--sort=-v:refname", "--list", "v*").split()
    for tag in tags:
        tagged = _git(repo, "rev-list", "-n", "1", tag)
        if tag.removeprefix("v") != __version__ and tagged != commit:
            return tagged, f"tag {tag}"
    head = ScriptDirectory.from_config(alembic_config()).get_revision(head_revisions()[0])
    assert head is not None
    assert head.path is not None
    migration = f"alembic/versions/{Path(head.path).name}"
    added = _git(
        repo, "log", "--first-parent", "--diff-filter=A", "--format=%H", commit, "--", migration
    ).split()
    if not added:
        return commit, f"{commit[:10]} (the newest migration, {migration}, is not committed)"
    try:
        parent = _git(repo, "rev-parse", "--verify", f"{added[-1]}^1")
    except LookupError:
        pytest.skip(f"{migration} came with the first commit: there is no previous release")
    return parent, f"{parent[:10]}, the commit before {migration} came in"


def _export(repo: Path, commit: str, into: Path) -> Path:
    """The previous release's package and migrations, from the repository's history."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit, "service", "alembic"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _env(old_tree: Path, url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ECSWATCH_", "DD_", "AWS_")) and k != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(old_tree),
        ECSWATCH_DATABASE_URL=url,
        ECSWATCH_API_TOKENS=ADMIN_TOKEN,
        ECSWATCH_LOG_FORMAT="json",
        ECSWATCH_DATA_DIR=str(old_tree / ".ecswatch"),
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def old_release(tmp_path: Path) -> tuple[Path, Path, str]:
    """The previous release's tree, the driver that runs it, and what it is."""
    repo, commit = _repository()
    previous, why = previous_release(repo, commit)
    old_tree = _export(repo, previous, tmp_path / "previous")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return old_tree, driver, why


def _replay(env: dict[str, str], command: list[str], files: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*command, "replay", *(str(SAMPLES / name) for name in files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


def test_previous_release_reads_and_writes_the_migrated_schema(
    empty_database_url: str, old_release: tuple[Path, Path, str]
) -> None:
    old_tree, driver, why = old_release
    env = _env(old_tree, empty_database_url)
    current_env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    old = [sys.executable, str(driver), str(old_tree)]
    current = [sys.executable, "-m", "service"]
    migrated = subprocess.run(
        [*current, "db", "upgrade"], env=current_env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    # This release writes first, then the previous one, through its consumer path.
    # A write the schema refuses is quarantined (or retried, which fails the replay).
    out = _replay(current_env, current, NEW_RELEASE_EVENTS)
    assert "applied" in out, out
    assert "quarantined" not in out, out
    out = _replay(env, old, OLD_RELEASE_EVENTS)
    assert "applied" in out, (why, out)
    assert "quarantined" not in out, (why, out)

    # Its API reads both releases' rows.
    port = _free_port()
    log = old_tree / "api.log"
    with log.open("w") as sink:
        api = subprocess.Popen(
            [*old, "run", "--roles", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN.partition(':')[2]}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                assert api.poll() is None, (why, log.read_text()[-3000:])
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (why, log.read_text()[-3000:])
                time.sleep(0.2)
            bodies = {}
            for route in READ_ROUTES:
                answer = client.get(route)
                assert answer.status_code == 200, (why, route, answer.text[:2000])
                bodies[route] = answer.json()
    finally:
        api.terminate()
        api.wait(timeout=30)

    tasks = json.dumps(bodies["/v1/tasks"])
    events = json.dumps(bodies["/v1/events"])
    for name in (*NEW_RELEASE_EVENTS, *OLD_RELEASE_EVENTS):
        sample = json.loads((SAMPLES / name).read_text())
        assert sample["id"] in events, (why, name)
        if sample["detail-type"] == "ECS Task State Change":
            assert sample["detail"]["taskArn"] in tasks, (why, name)


async def test_a_release_starts_on_a_newer_schema(empty_database_url: str) -> None:
    """A rolled-back release finds the database at a revision it does not know."""
    engine = create_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_later'"))
        await upgrade(engine)  # leaves the schema as it is instead of failing
        async with engine.connect() as conn:
            after = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert after == "9999_from_later"
    finally:
        await engine.dispose()
