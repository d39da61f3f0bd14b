"""The roles one process can run, and their supervision.

A role is an ``async def role(runtime, stop)`` that returns when ``stop`` is set.
If a role dies, the process stops (an orchestrator restarts it) rather than
limping on half-alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from service.config import ROLES
from service.runtime import Runtime

ALL_ROLES = ROLES

RoleFn = Callable[[Runtime, asyncio.Event], Awaitable[None]]


@dataclass
class RoleStatus:
    """Which roles were selected and which are running now (for /readyz)."""

    running: dict[str, bool] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        return {name: "running" if up else "stopped" for name, up in self.running.items()}

    def all_running(self) -> bool:
        return all(self.running.values())


def parse_roles(value: str) -> tuple[str, ...]:
    """Parse ``--roles a,b``; raise ValueError naming an unknown role."""
    roles = tuple(dict.fromkeys(r.strip() for r in value.split(",") if r.strip()))
    if not roles:
        raise ValueError("--roles needs at least one of " + ", ".join(ALL_ROLES))
    unknown = [r for r in roles if r not in ALL_ROLES]
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r} (expected {', '.join(ALL_ROLES)})")
    return roles
