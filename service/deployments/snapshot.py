"""One deployment as it stands after a transaction's writes, and how it is worded.

The lifecycle (:mod:`service.deployments.lifecycle`) reads the snapshot back once,
after the state, deployment and transition writes of a transaction; the alerts
and the Datadog facts both read it, neither recomputes it. The same holds for a
failure's :attr:`DeploymentSnapshot.cause`, attached once by
:mod:`service.deployments.causes`. A failure is worded by :func:`failure_summary`
alone. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from service.deployments.cause import Cause
from service.deployments.outcome import DeploymentKind, Outcome
from service.events.arns import target_group_name

#: Outcomes that are a failure of the deployment (``deployment.failed``).
FAILED_OUTCOMES = frozenset({Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.ROLLBACK_FAILED})
#: Kinds that shift traffic between two target groups.
BLUE_GREEN_KINDS = frozenset({DeploymentKind.BLUE_GREEN, DeploymentKind.CODEDEPLOY})


class DeploymentKey(NamedTuple):
    """A deployment's identity: its id is unique only within its scope, the account
    and region of its events ('' where a deployment stored before had none known)."""

    account_id: str
    region: str
    id: str


def key_params(keys: Iterable[DeploymentKey]) -> dict[str, list[str]]:
    """``accounts``, ``regions`` and ``ids``: ``keys`` as three parallel arrays (sorted,
    once each), the form the statements that take several deployments bind."""
    ordered = sorted(set(keys))
    return {
        "accounts": [k.account_id for k in ordered],
        "regions": [k.region for k in ordered],
        "ids": [k.id for k in ordered],
    }


#: SQL: whether deployment ``d`` is one of the keys :func:`key_params` binds.
KEYS_MATCH = (
    "(d.account_id, d.region, d.id) IN (SELECT * FROM unnest(CAST(:accounts AS TEXT[]),"
    " CAST(:regions AS TEXT[]), CAST(:ids AS TEXT[])))"
)


@dataclass(frozen=True, slots=True)
class DeploymentSnapshot:
    """A deployment row as it stands after the transaction's writes."""

    id: str
    kind: DeploymentKind
    outcome: Outcome
    # The deployment's scope ('' where not known): see DeploymentKey.
    account_id: str = ""
    region: str = ""
    cluster: str | None = None
    service: str | None = None
    service_arn: str | None = None
    reason: str | None = None
    rollback_target: str | None = None
    stuck: bool = False
    task_definition: str | None = None
    lifecycle_stage: str | None = None
    failed_tasks: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    event_ids: tuple[str, ...] = ()
    # Another deployment rolls back to this one: its completion is a restore,
    # not a success of its own to announce.
    is_rollback_target: bool = False
    codedeploy_application: str | None = None
    codedeploy_group: str | None = None
    # Ordering key of the deployment's latest event (for the CodeDeploy hold).
    last_event_at: datetime | None = None
    # Name of the deployment's latest event; None when it is known only from its tasks.
    last_event_name: str | None = None
    # The poller has mapped the CodeDeploy group (a codedeploy_groups row exists).
    group_resolved: bool = True
    # [{"name", "arn"}] of the deployment's target groups, where the poller knows them.
    target_groups: tuple[dict[str, str | None], ...] = ()
    cluster_arn: str | None = None
    # Why it failed or is stuck: set (service.deployments.causes) only while an
    # alert that carries it is being raised; alerts and Datadog both read it.
    cause: Cause | None = None
    # The failed deployment that this success closes (``deployment.recovered``): set
    # only while that alert is being raised.
    recovers: str | None = None

    @property
    def key(self) -> DeploymentKey:
        return DeploymentKey(self.account_id, self.region, self.id)


def where(cluster: str | None, service: str | None) -> str:
    """``cluster/service`` as far as known."""
    return "/".join(p for p in (cluster, service) if p) or "an unknown service"


def failure_summary(d: DeploymentSnapshot) -> str:
    """The one sentence that says a deployment failed: where, why, and what it rolls
    back to. Alerts and Datadog events both word a failure with it."""
    reason = f": {d.reason}" if d.reason else ""
    target = f"; rolling back to {d.rollback_target}" if d.rollback_target else ""
    return f"Deployment {d.id} of {where(d.cluster, d.service)} failed{reason}{target}"


def target_groups(
    load_balancers: Iterable[Mapping[str, Any]] | None,
    codedeploy_pair: Iterable[Mapping[str, Any]] | None,
) -> tuple[dict[str, str | None], ...]:
    """A deployment's target groups: CodeDeploy's pair (from the mapper) first, then
    the service's load balancers (``target_group_arn`` and ECS native blue/green's
    ``alternate_target_group_arn``, from DescribeServices); once each, by name."""
    found: dict[str, dict[str, str | None]] = {}
    for tg in codedeploy_pair or []:
        name, arn = tg.get("name"), tg.get("arn")
        if isinstance(name, str) and name:
            found.setdefault(name, {"name": name, "arn": arn if isinstance(arn, str) else None})
    for lb in load_balancers or []:
        for key in ("target_group_arn", "alternate_target_group_arn"):
            arn = lb.get(key)
            if isinstance(arn, str) and arn:
                name = target_group_name(arn) or arn
                known = found.setdefault(name, {"name": name, "arn": arn})
                if known["arn"] is None:
                    known["arn"] = arn
    return tuple(found.values())
