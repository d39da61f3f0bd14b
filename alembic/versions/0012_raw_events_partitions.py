"""Raw events partitioned by day; natural keys deduplicated in a table of their own.

``raw_events`` becomes ``PARTITION BY RANGE (time)``: one partition per UTC day,
named ``raw_events_pYYYYMMDD``, plus ``raw_events_default`` for an event whose day
has no partition yet (docs/runbook.md, "Raw event partitions"). Retention drops a
whole day's partition instead of deleting its rows (service/retention.py).

A partitioned table's unique indexes must include the partition key, so:

- the primary key is ``(id, time)``. A re-delivered event is the same document,
  with the same ``time``, so ``ON CONFLICT`` on it still finds the copy, in
  whichever partition it lives;
- ``natural_key`` (versionless events re-sent under a new EventBridge id, possibly
  with another ``time``) is unique in ``raw_event_natural_keys``, a plain table
  keyed by it alone; the raw event insert claims the key there first, in the same
  statement. Retention deletes its rows past the cutoff like the other history.

Two functions, owned by the migration's role and run with its rights
(``SECURITY DEFINER``), create and drop one day's partition, so that the runtime
user needs no schema rights: ``raw_events_add_day(day)`` (moving that
day's rows out of the default partition, if any) and
``raw_events_drop_day(day)`` (returning the rows it dropped). Upgrade
creates a partition for every day that has rows, and for today and the 7 days
ahead; rows past that go to the default partition.

Downgrade moves every row back into one plain table, unique by ``id`` and by
``natural_key``. It loses data only where those are not unique: of rows with the
same ``id`` at different times (a sender reusing an id) it keeps the earliest,
and a ``natural_key`` stays on its first row only (ecswatch's insert never stores
it twice; a row written by hand might).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_AHEAD = 7

_COLUMNS = (
    "id, detail_type, source, account, region, time, resources, detail, "
    "cluster_arn, cluster_name, natural_key, received_at"
)

_TABLE = """
CREATE TABLE {name} (
    id TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    source TEXT NOT NULL,
    account TEXT,
    region TEXT,
    time TIMESTAMP WITH TIME ZONE NOT NULL,
    resources JSONB DEFAULT '[]'::jsonb NOT NULL,
    detail JSONB NOT NULL,
    cluster_arn TEXT,
    cluster_name TEXT,
    natural_key TEXT,
    received_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL
){options}
"""

_INDEXES = (
    "CREATE INDEX ix_raw_events_cluster_arn_time ON raw_events (cluster_arn, time DESC)",
    "CREATE INDEX ix_raw_events_cluster_name_time ON raw_events (cluster_name, time DESC)",
    "CREATE INDEX ix_raw_events_detail_type_time ON raw_events (detail_type, time DESC)",
    "CREATE INDEX ix_raw_events_resources ON raw_events USING gin (resources jsonb_path_ops)",
    "CREATE INDEX ix_raw_events_time_id ON raw_events (time DESC, id DESC)",
)

# One lock for every partition change, so two callers never race on one day.
_ADD_DAY = """
CREATE FUNCTION raw_events_add_day(day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := 'raw_events_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ecswatch_raw_events_partitions'));
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Built apart and attached: ATTACH takes a weaker lock on raw_events than
    -- CREATE TABLE ... PARTITION OF, and the day's rows leave the default first.
    EXECUTE format('CREATE TABLE %I (LIKE raw_events INCLUDING DEFAULTS)', part);
    EXECUTE format(
        'WITH moved AS (DELETE FROM raw_events_default WHERE time >= %L AND time < %L'
        ' RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format(
        'ALTER TABLE raw_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        part, lo, hi);
    RETURN true;
END
$$
"""

_DROP_DAY = """
CREATE FUNCTION raw_events_drop_day(day date) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := 'raw_events_p' || to_char(day, 'YYYYMMDD');
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ecswatch_raw_events_partitions'));
    IF NOT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'raw_events'::regclass AND c.relname = part
    ) THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT count(*) FROM %I', part) INTO n;
    EXECUTE format('DROP TABLE %I', part);
    RETURN n;
END
$$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE raw_events RENAME TO raw_events_unpartitioned")
    op.execute(
        "ALTER TABLE raw_events_unpartitioned "
        "RENAME CONSTRAINT pk_raw_events TO pk_raw_events_unpartitioned"
    )
    op.execute("ALTER TABLE raw_events_unpartitioned DROP CONSTRAINT uq_raw_events_natural_key")
    for index in _INDEXES:
        op.execute(f"DROP INDEX {index.split()[2]}")
    op.execute(_TABLE.format(name="raw_events", options=" PARTITION BY RANGE (time)"))
    op.execute("CREATE TABLE raw_events_default PARTITION OF raw_events DEFAULT")
    op.execute(
        "CREATE TABLE raw_event_natural_keys ("
        " natural_key TEXT NOT NULL, id TEXT NOT NULL,"
        " time TIMESTAMP WITH TIME ZONE NOT NULL,"
        " CONSTRAINT pk_raw_event_natural_keys PRIMARY KEY (natural_key))"
    )
    op.execute("CREATE INDEX ix_raw_event_natural_keys_time ON raw_event_natural_keys (time)")
    for function in (_ADD_DAY, _DROP_DAY):
        op.execute(function)
    # Only the users granted it (docs/deploy.md) may change partitions.
    op.execute("REVOKE ALL ON FUNCTION raw_events_add_day(date) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION raw_events_drop_day(date) FROM PUBLIC")
    # Every day with rows (up to the week ahead), and the week ahead itself.
    op.execute(
        "SELECT raw_events_add_day(d) FROM ("
        " SELECT DISTINCT (time AT TIME ZONE 'UTC')::date AS d FROM raw_events_unpartitioned"
        " UNION SELECT (now() AT TIME ZONE 'UTC')::date + g"
        f" FROM generate_series(0, {DAYS_AHEAD}) AS g) AS days"
        f" WHERE d <= (now() AT TIME ZONE 'UTC')::date + {DAYS_AHEAD} ORDER BY d"
    )
    op.execute(
        f"INSERT INTO raw_events ({_COLUMNS}) SELECT {_COLUMNS} FROM raw_events_unpartitioned"
    )
    op.execute(
        "INSERT INTO raw_event_natural_keys (natural_key, id, time)"
        " SELECT natural_key, id, time FROM raw_events_unpartitioned"
        " WHERE natural_key IS NOT NULL"
    )
    op.execute("DROP TABLE raw_events_unpartitioned")
    # On the partitioned table: each partition gets its own, now and when added.
    op.execute("ALTER TABLE raw_events ADD CONSTRAINT pk_raw_events PRIMARY KEY (id, time)")
    for index in _INDEXES:
        op.execute(index)


def downgrade() -> None:
    op.execute(_TABLE.format(name="raw_events_unpartitioned", options=""))
    # One row per id (its earliest), and a natural key on one row only (its first),
    # as the plain table's unique constraints require.
    first_of_key = (
        "CASE WHEN row_number() OVER (PARTITION BY natural_key ORDER BY time, id) = 1"
        " THEN natural_key END"
    )
    op.execute(
        f"INSERT INTO raw_events_unpartitioned ({_COLUMNS})"
        f" SELECT DISTINCT ON (id) {_COLUMNS.replace('natural_key', first_of_key)}"
        " FROM raw_events ORDER BY id, time"
    )
    op.execute("DROP TABLE raw_events")  # with its partitions
    op.execute("DROP FUNCTION raw_events_add_day(date)")
    op.execute("DROP FUNCTION raw_events_drop_day(date)")
    op.execute("DROP TABLE raw_event_natural_keys")
    op.execute("ALTER TABLE raw_events_unpartitioned RENAME TO raw_events")
    op.execute("ALTER TABLE raw_events ADD CONSTRAINT pk_raw_events PRIMARY KEY (id)")
    op.execute(
        "ALTER TABLE raw_events ADD CONSTRAINT uq_raw_events_natural_key UNIQUE (natural_key)"
    )
    for index in _INDEXES:
        op.execute(index)
