"""The roles one process can run, each assembled here from the domain packages.

A role is an ``async def role(runtime, stop)`` that returns when ``stop`` is set:
``consumer`` (:mod:`.consumer`), ``poller`` (:mod:`.poller`), ``dispatcher``
with its sweeps and the Datadog job (:mod:`.dispatcher`), ``api`` (:mod:`.api`);
:mod:`.supervisor` runs the selected ones. If a role dies, the process stops (an
orchestrator restarts it) rather than limping on half-alive. Domain packages
never import a role.
"""

from __future__ import annotations

from service.config import ROLES

ALL_ROLES = ROLES


def parse_roles(value: str) -> tuple[str, ...]:
    """Parse ``--roles a,b``; raise ValueError naming an unknown role."""
    roles = tuple(dict.fromkeys(r.strip() for r in value.split(",") if r.strip()))
    if not roles:
        raise ValueError("--roles needs at least one of " + ", ".join(ALL_ROLES))
    unknown = [r for r in roles if r not in ALL_ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r} (expected {', '.join(ALL_ROLES)})")
    return roles
