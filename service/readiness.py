"""Which roles this process runs, and which are running now (``/readyz``).

The roles (:mod:`service.roles`) set it; the API reads it. Kept apart from the
roles so that the API never imports a role.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoleStatus:
    """Which roles were selected and which are running now (for /readyz)."""

    running: dict[str, bool] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        return {name: "running" if up else "stopped" for name, up in self.running.items()}

    def all_running(self) -> bool:
        return all(self.running.values())
