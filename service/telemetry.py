"""ecswatch's own Prometheus metrics, served at ``GET /metrics``.

One registry per process (not the global default) so that tests and several
apps in one process never collide. Counters export no ``_created`` series (it
would double the series count and says nothing a scraper needs), and every
labelled series whose label values ecswatch knows in advance exists from start-up
at 0 (:func:`precreate`), so a dashboard tells "none yet" from "not running".
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

#: Label values known in advance (a test compares each list with the code using it).
OUTBOX_KINDS: tuple[str, ...] = ("datadog_metrics", "datadog_event", "webhook")
DISPATCH_OUTCOMES: tuple[str, ...] = ("delivered", "retry", "dead")
#: (service, operation) of every AWS call ecswatch makes at run time.
AWS_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("cloudwatch", "GetMetricData"),
    ("codedeploy", "BatchGetDeployments"),
    ("codedeploy", "GetDeploymentGroup"),
    ("ecs", "DescribeClusters"),
    ("ecs", "DescribeContainerInstances"),
    ("ecs", "DescribeServiceDeployments"),
    ("ecs", "DescribeServiceRevisions"),
    ("ecs", "DescribeServices"),
    ("ecs", "DescribeTaskDefinition"),
    ("ecs", "DescribeTasks"),
    ("ecs", "ListClusters"),
    ("ecs", "ListContainerInstances"),
    ("ecs", "ListServiceDeployments"),
    ("ecs", "ListServices"),
    ("ecs", "ListTasks"),
    ("elbv2", "DescribeTargetGroups"),
    ("events", "PutEvents"),
)
AWS_OUTCOMES: tuple[str, ...] = ("ok", "throttled", "error")
DATADOG_RESULTS: tuple[str, ...] = ("sent", "retried", "dropped", "dead")
DATADOG_DROP_REASONS: tuple[tuple[str, str], ...] = (
    ("points", "too_old"),
    ("points", "unregistered"),
    ("points", "not_finite"),
    ("events", "too_old"),
)

EVENTS_RECEIVED = Counter(
    "ecswatch_events_received",
    "Messages received, by detail-type (unknown when unparseable)",
    ["detail_type"],
    registry=REGISTRY,
)
EVENTS_APPLIED = Counter(
    "ecswatch_events_applied",
    "Events that changed state, by detail-type",
    ["detail_type"],
    registry=REGISTRY,
)
EVENTS_STALE = Counter(
    "ecswatch_events_stale",
    "Versioned events older than the stored version, by detail-type",
    ["detail_type"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "ecswatch_events_duplicate",
    "Events seen before (same id, natural key or version), by detail-type",
    ["detail_type"],
    registry=REGISTRY,
)
EVENTS_QUARANTINED = Counter(
    "ecswatch_events_quarantined",
    "Messages quarantined as never processable, by detail-type",
    ["detail_type"],
    registry=REGISTRY,
)
EVENTS_UNKNOWN_TYPE = Counter(
    "ecswatch_events_unknown_type",
    "Events of a detail-type ecswatch does not model (stored raw)",
    ["detail_type"],
    registry=REGISTRY,
)
RECEIVE_LAG = Histogram(
    "ecswatch_queue_lag_seconds",
    "Now minus SQS SentTimestamp at receive",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
AWS_CALLS = Counter(
    "ecswatch_aws_calls",
    "AWS API calls, by service, operation and outcome (ok, throttled, error)",
    ["service", "operation", "outcome"],
    registry=REGISTRY,
)
AWS_THROTTLES = Counter(
    "ecswatch_aws_throttles",
    "AWS API calls throttled, by operation",
    ["operation"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge("ecswatch_outbox_depth", "Pending outbox rows", ["kind"], registry=REGISTRY)
OUTBOX_OLDEST_AGE = Gauge(
    "ecswatch_outbox_oldest_age_seconds",
    "Age of the oldest pending outbox row",
    registry=REGISTRY,
)
DISPATCH_RESULTS = Counter(
    "ecswatch_dispatch_results",
    "Outbox dispatch attempts, by kind and result (delivered, retry, dead)",
    ["kind", "result"],
    registry=REGISTRY,
)

# Retention: what the poller's leader prunes, and when it last finished.
RETENTION_ROWS_PRUNED = Counter(
    "ecswatch_retention_rows_pruned",
    "Rows deleted by retention, by table",
    ["table"],
    registry=REGISTRY,
)
RETENTION_LAST_RUN = Gauge(
    "ecswatch_retention_last_run_timestamp_seconds",
    "Unix time of the last retention run that finished (0: none yet in this process)",
    registry=REGISTRY,
)
RETENTION_LAST_RUN_DURATION = Gauge(
    "ecswatch_retention_last_run_duration_seconds",
    "How long the last finished retention run took",
    registry=REGISTRY,
)

# ---- alerts and dispatcher
OUTBOX_DEAD = Gauge(
    "ecswatch_outbox_dead",
    "Outbox rows whose retry budget is spent (status dead), by kind",
    ["kind"],
    registry=REGISTRY,
)
ALERTS_RAISED = Counter(
    "ecswatch_alerts_raised",
    "Alerts raised, by type",
    ["type"],
    registry=REGISTRY,
)

# --- Datadog forwarding (service.datadog) ---
DATADOG_POINTS = Counter(
    "ecswatch_datadog_points",
    "Metric points handled by the Datadog sender, by result (sent, retried, dropped, dead)",
    ["result"],
    registry=REGISTRY,
)
DATADOG_EVENTS = Counter(
    "ecswatch_datadog_events",
    "Datadog events handled by the sender, by result (sent, retried, dropped, dead)",
    ["result"],
    registry=REGISTRY,
)
DATADOG_DROPPED = Counter(
    "ecswatch_datadog_dropped",
    "Points or events not sent to Datadog, by kind and reason (too_old, unregistered, not_finite)",
    ["kind", "reason"],
    registry=REGISTRY,
)
DATADOG_FAILURES = Counter(
    "ecswatch_datadog_failures",
    "Failed Datadog requests, by kind and HTTP status (network when no answer)",
    ["kind", "status"],
    registry=REGISTRY,
)

# ---- enrichment and poller
ENRICH_QUEUE_DEPTH = Gauge(
    "ecswatch_enrich_queue_depth",
    "Resources waiting for enrichment (Describe calls after commit)",
    registry=REGISTRY,
)
ENRICH_DROPPED = Counter(
    "ecswatch_enrich_dropped",
    "Enrichment requests dropped (queue full, throttled or failed); reconciliation fills them in",
    ["reason"],
    registry=REGISTRY,
)
DB_CONTENTION = Counter(
    "ecswatch_db_contention",
    "Write transactions that lost a lock race (deadlock or serialization failure):"
    " run again (retried) or given up after the last attempt (gave_up)",
    ["transaction", "result"],
    registry=REGISTRY,
)
ENRICHED = Counter(
    "ecswatch_enriched",
    "Resources written from a Describe call, by kind",
    ["kind"],
    registry=REGISTRY,
)
LAST_POLL = Gauge(
    "ecswatch_last_metrics_poll_timestamp_seconds",
    "Unix time of the last successful CloudWatch metrics poll",
    registry=REGISTRY,
)
LAST_RECONCILE = Gauge(
    "ecswatch_last_reconcile_timestamp_seconds",
    "Unix time of the last successful full reconciliation",
    registry=REGISTRY,
)
DRIFT_REPAIRED = Counter(
    "ecswatch_drift_repaired",
    "Rows reconciliation changed (state that events had missed), by kind",
    ["kind"],
    registry=REGISTRY,
)
POLLER_LEADER = Gauge(
    "ecswatch_poller_leader",
    "1 while this process holds the poller's leader lock",
    registry=REGISTRY,
)
HEARTBEAT_AGE = Gauge(
    "ecswatch_heartbeat_age_seconds",
    "Seconds since the time of the newest heartbeat consumed off the queue"
    " (read from the database at each scrape; +Inf when none was ever recorded)",
    registry=REGISTRY,
)
SCOPE_HEARTBEAT_AGE = Gauge(
    "ecswatch_scope_heartbeat_age_seconds",
    "Seconds since the time of the newest heartbeat consumed from each scope, by account"
    " and region (read from the database at each scrape; a scope that never sent one"
    " has no series)",
    ["account_id", "region"],
    registry=REGISTRY,
)
METRIC_POINTS_STORED = Counter(
    "ecswatch_metric_points_stored",
    "CloudWatch datapoints written (inserted or updated), by namespace",
    ["namespace"],
    registry=REGISTRY,
)
UNMONITORED_EVENTS = Counter(
    "ecswatch_unmonitored_events",
    "Events from an account and region ecswatch holds no credentials for: kept, never"
    ' described (docs/aws.md, "Accounts and regions"), by account',
    ["account_id"],
    registry=REGISTRY,
)
SCOPE_FAILURES = Counter(
    "ecswatch_scope_failures",
    "Reconcile or metrics rounds of one scope that failed (access denied, expired trust,"
    " region not enabled, ...), by account, region and job",
    ["account_id", "region", "job"],
    registry=REGISTRY,
)


def precreate() -> None:
    """Create every labelled series whose label values are known, at 0.

    Idempotent: an existing series keeps its value.
    """
    for kind in OUTBOX_KINDS:
        OUTBOX_DEPTH.labels(kind)
        OUTBOX_DEAD.labels(kind)
        for outcome in DISPATCH_OUTCOMES:
            DISPATCH_RESULTS.labels(kind, outcome)
    for service, operation in AWS_OPERATIONS:
        AWS_THROTTLES.labels(operation)
        for outcome in AWS_OUTCOMES:
            AWS_CALLS.labels(service, operation, outcome)
    for result in DATADOG_RESULTS:
        DATADOG_POINTS.labels(result)
        DATADOG_EVENTS.labels(result)
    for kind, reason in DATADOG_DROP_REASONS:
        DATADOG_DROPPED.labels(kind, reason)


precreate()
