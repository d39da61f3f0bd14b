"""The deployment upsert: the fold of :mod:`service.deployments.outcome`, in SQL.

Deployment events are applied one conditional upsert per event and id, multi-row
per batch, never read-then-write: ordered by ``updatedAt``, then by outcome rank
on ties, then finished; rollback targets are sticky, so a late rollback notice
still turns a completion into ``rolled_back``. Deployments known only through
their tasks' ``startedBy`` are created on first sight. The tests hold this SQL
to the pure fold (every permutation of a sequence ends in the same rows).

Only executes: the caller owns the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache

from sqlalchemy.ext.asyncio import AsyncSession

from service.config import ServiceRef
from service.deployments.outcome import RANK, Outcome
from service.deployments.rows import Row, deployment_row, task_deployment_row
from service.deployments.rules import FAILED_STOP_CODES
from service.deployments.snapshot import DeploymentKey, key_params
from service.events.models import NormalisedEvent
from service.state.bulk import bulk_insert, execute, payload
from service.state.models import Deployment


def _rank(outcome: str) -> str:
    """:data:`~service.deployments.outcome.RANK` in SQL (an unknown value ranks last)."""
    whens = " ".join(f"WHEN '{o}' THEN {rank}" for o, rank in RANK.items())
    return f"CASE {outcome} {whens} ELSE {max(RANK.values())} END"


# Deployment events are ordered by (updatedAt, outcome rank, finished): on a full
# tie the finishing event wins, so the arrival order never decides (outcome.merge).
_DEPLOYMENT_NEWER = (
    f"(excluded.last_event_at, {_rank('excluded.outcome')}, excluded.finished_at IS NOT NULL)"
    " > (coalesce(deployments.last_event_at, CAST('-infinity' AS TIMESTAMP WITH TIME ZONE)),"
    f" {_rank('deployments.outcome')}, deployments.finished_at IS NOT NULL)"
)
_DEPLOYMENT_ROLLBACK = "coalesce(deployments.rollback_target, excluded.rollback_target)"
_DEPLOYMENT_WINNER = (
    f"CASE WHEN ({_DEPLOYMENT_NEWER}) THEN excluded.outcome ELSE deployments.outcome END"
)


def _if_newer(column: str) -> str:
    return (
        f"{column} = CASE WHEN ({_DEPLOYMENT_NEWER}) THEN excluded.{column}"
        f" ELSE deployments.{column} END"
    )


def _first_known(column: str) -> str:
    return f"{column} = coalesce(deployments.{column}, excluded.{column})"


# A deployment id is unique only within its scope (account and region).
CONFLICT_KEY = " ON CONFLICT (account_id, region, id) DO UPDATE SET "

DEPLOYMENTS_ON_CONFLICT = CONFLICT_KEY + ", ".join(
    [
        _first_known("cluster_arn"),
        _first_known("cluster_name"),
        _first_known("service_arn"),
        _first_known("service_name"),
        _first_known("codedeploy_application"),
        _first_known("codedeploy_group"),
        _first_known("task_definition"),
        _first_known("service_deployment_arn"),
        # ECS's service deployment record, as last described (events carry none).
        "strategy = coalesce(excluded.strategy, deployments.strategy)",
        "triggered_alarms = coalesce(excluded.triggered_alarms, deployments.triggered_alarms)",
        f"rollback_target = {_DEPLOYMENT_ROLLBACK}",
        # Rollback targets are sticky: a late rollback notice still turns a
        # completion into rolled_back.
        f"outcome = CASE WHEN ({_DEPLOYMENT_WINNER} = '{Outcome.SUCCEEDED}'"
        f" AND {_DEPLOYMENT_ROLLBACK} IS NOT NULL) THEN '{Outcome.ROLLED_BACK}'"
        f" ELSE {_DEPLOYMENT_WINNER} END",
        _if_newer("reason"),
        _if_newer("lifecycle_stage"),
        _if_newer("last_event_at"),
        _if_newer("last_event_name"),
        _if_newer("finished_at"),
        "event_ids = CASE WHEN (deployments.event_ids @> excluded.event_ids)"
        " THEN deployments.event_ids ELSE deployments.event_ids || excluded.event_ids END",
        "started_at = least(deployments.started_at, excluded.started_at)",
        "updated_at = greatest(deployments.updated_at, excluded.updated_at)",
    ]
)

TASK_DEPLOYMENTS_ON_CONFLICT = CONFLICT_KEY + ", ".join(
    [
        _first_known("task_definition"),
        _first_known("cluster_arn"),
        _first_known("cluster_name"),
        _first_known("service_name"),
        "started_at = least(deployments.started_at, excluded.started_at)",
    ]
)


@cache
def upsert_sql(columns: tuple[str, ...], on_conflict: str) -> str:
    # Rows go in the order of the arrays (sorted by key), as one statement per row did.
    return bulk_insert(Deployment, columns, order_by=None) + on_conflict


# A circuit-breaker rollback ends when the restored deployment completes after
# the failed one began (its earlier completion is not the restore). Comparing with
# the failed deployment's start, not its latest event, lets a FAILED stamped after
# the restore still end in rolled_back (outcome.settle is the specification).
# A rollback target is a deployment of the same scope. The keys come as three
# parallel arrays (account, region, id).
_KEYS = "(SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]))"
END_ROLLBACKS = (
    f"UPDATE deployments AS d SET outcome = '{Outcome.ROLLED_BACK}', "
    "finished_at = COALESCE(d.finished_at, x.last_event_at) "
    "FROM deployments AS x "
    "WHERE d.rollback_target = x.id AND d.account_id = x.account_id AND d.region = x.region "
    f"AND d.outcome = '{Outcome.FAILED}' "
    f"AND x.outcome = '{Outcome.SUCCEEDED}' AND x.last_event_at >= d.started_at "
    f"AND ((d.account_id, d.region, d.id) IN {_KEYS} OR (x.account_id, x.region, x.id) IN {_KEYS})"
)
# The tasks a deployment started are those of its scope (the task ARN's account and
# region) whose startedBy names it.
COUNT_FAILED_TASKS = (
    "UPDATE deployments AS d SET failed_tasks = sub.n FROM ("
    " SELECT split_part(arn, ':', 5) AS account_id, split_part(arn, ':', 4) AS region,"
    " deployment_id, count(*) AS n FROM tasks"
    " WHERE deployment_id = ANY($3::TEXT[]) AND last_status = 'STOPPED'"
    " AND stop_code = ANY($4::TEXT[]) GROUP BY 1, 2, 3"
    f") AS sub WHERE (d.account_id, d.region, d.id) IN {_KEYS}"
    " AND (d.account_id, d.region, d.id) = (sub.account_id, sub.region, sub.deployment_id)"
    " AND d.failed_tasks <> sub.n"
)


def _key_arrays(keys: Sequence[DeploymentKey]) -> tuple[list[str], list[str], list[str]]:
    params = key_params(keys)
    return params["accounts"], params["regions"], params["ids"]


def _key(row: Row) -> DeploymentKey:
    return DeploymentKey(row["account_id"], row["region"], row["id"])


async def upsert_deployments(
    session: AsyncSession,
    events: list[NormalisedEvent],
    codedeploy_groups: dict[str, ServiceRef],
    task_events: list[NormalisedEvent],
) -> list[DeploymentKey]:
    """Upsert deployments; the keys of those this batch touched."""
    by_id: dict[DeploymentKey, list[Row]] = defaultdict(list)
    for event in events:
        row = deployment_row(event, codedeploy_groups)
        if row is not None:
            by_id[_key(row)].append(row)
    # ON CONFLICT cannot touch one row twice per statement: one event per id a round.
    rounds: list[list[Row]] = []
    for rows in by_id.values():
        for index, row in enumerate(rows):
            if index == len(rounds):
                rounds.append([])
            rounds[index].append(row)
    for round_rows in rounds:
        if round_rows:
            ordered = sorted(round_rows, key=_key)
            # ``rank`` is no column: the statement ranks outcomes itself.
            columns = tuple(c for c in ordered[0] if c != "rank")
            await execute(
                session,
                upsert_sql(columns, DEPLOYMENTS_ON_CONFLICT),
                payload(ordered),
            )

    task_rows: dict[DeploymentKey, Row] = {}
    for event in task_events:
        row = task_deployment_row(event)
        if row is not None and _key(row) not in task_rows:
            task_rows[_key(row)] = row
    if task_rows:
        ordered = sorted(task_rows.values(), key=_key)
        columns = tuple(ordered[0])
        await execute(
            session,
            upsert_sql(columns, TASK_DEPLOYMENTS_ON_CONFLICT),
            payload(ordered),
        )

    touched = sorted(set(by_id) | set(task_rows))
    if touched:
        await execute(session, END_ROLLBACKS, *_key_arrays(touched))
    if task_rows:
        await execute(
            session, COUNT_FAILED_TASKS, *_key_arrays(sorted(task_rows)), list(FAILED_STOP_CODES)
        )
    return touched


async def upsert_deployment_rows(session: AsyncSession, rows: Sequence[Row]) -> list[DeploymentKey]:
    """Apply deployment rows that no event carried (the poller's BatchGetDeployments
    check builds them with :func:`service.deployments.rows.codedeploy_deployment_row`,
    its service deployment check with
    :func:`service.deployments.rows.service_deployment_row`) through the same ordered
    upsert as the events. The keys written."""
    latest: dict[DeploymentKey, Row] = {}
    for row in rows:
        latest.setdefault(_key(row), row)  # one row per deployment a statement
    if not latest:
        return []
    ordered = sorted(latest.values(), key=_key)
    columns = tuple(c for c in ordered[0] if c != "rank")
    await execute(session, upsert_sql(columns, DEPLOYMENTS_ON_CONFLICT), payload(ordered))
    keys = sorted(latest)
    await execute(session, END_ROLLBACKS, *_key_arrays(keys))
    return keys
