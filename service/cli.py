"""The ``ecswatch`` command line.

Every failure a user can cause ends in one line on stderr naming the problem and
a non-zero exit code (2 for bad settings or arguments); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.exc import ArgumentError, DBAPIError

from service import __version__, eventloop
from service.config import Settings, is_loopback, load_settings
from service.errors import ConfigError, EcswatchError
from service.logging import configure_logging, get_logger
from service.roles import ALL_ROLES, parse_roles

log = get_logger("ecswatch")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"ecswatch: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ecswatch",
        description="Async, event-driven monitoring service for Amazon ECS.",
    )
    parser.add_argument("--version", action="version", version=f"ecswatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run the service (all roles in one process by default)")
    run.add_argument(
        "--roles",
        default=",".join(ALL_ROLES),
        help=f"comma-separated roles to run: {', '.join(ALL_ROLES)} (default: all)",
    )
    run.add_argument("--host", default=None, help="API bind address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    run.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="do not apply migrations at start (run `ecswatch db upgrade` separately, "
        "as a user that owns the schema)",
    )

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", parser_class=_Parser)
    db_sub.add_parser("upgrade", help="apply Alembic migrations up to head")
    # db downgrade / db current.
    db_down = db_sub.add_parser(
        "downgrade", help="revert Alembic migrations down to REV (base: drop everything)"
    )
    db_down.add_argument("revision", metavar="REV", help="target revision: 0001, -1 or base")
    db_sub.add_parser("current", help="print the database's Alembic revision")

    demo = sub.add_parser(
        "demo", help="the whole system on this machine: no cloud account, no database server"
    )
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")

    aws = sub.add_parser("aws", help="AWS resources ecswatch needs")
    aws_sub = aws.add_subparsers(dest="aws_command", metavar="AWS_COMMAND", parser_class=_Parser)
    setup = aws_sub.add_parser(
        "setup", help="create the SQS queue, DLQ, queue policy and EventBridge rule"
    )
    setup.add_argument("--queue-name", required=True)
    setup.add_argument(
        "--organization",
        metavar="ORG_ID",
        default=None,
        help="also an event bus for this AWS Organization's accounts (o-...), "
        "with a rule to the queue (docs/deploy.md, An organization)",
    )

    replay = sub.add_parser(
        "replay", help="feed event JSON files (object, array or JSON lines) through the pipeline"
    )
    replay.add_argument("files", nargs="+", metavar="FILE")

    sec = sub.add_parser("secrets", help="the key that encrypts webhook secrets and URLs")
    sec_sub = sec.add_subparsers(
        dest="secrets_command", metavar="SECRETS_COMMAND", parser_class=_Parser
    )
    sec_sub.add_parser("generate-key", help="print a new key for ECSWATCH_SECRET_KEY")
    sec_sub.add_parser(
        "rotate-key", help="re-encrypt every stored webhook secret and URL under the newest key"
    )

    wh = sub.add_parser("webhooks", help="export and import webhook subscriptions (JSON)")
    wh_sub = wh.add_subparsers(
        dest="webhooks_command", metavar="WEBHOOKS_COMMAND", parser_class=_Parser
    )
    wh_export = wh_sub.add_parser(
        "export", help="write every subscription as JSON, secrets sealed under a key you name"
    )
    wh_import = wh_sub.add_parser(
        "import", help="create or update subscriptions from an export (all or nothing)"
    )
    wh_import.add_argument("file", metavar="FILE", help="the export (- reads stdin)")
    for p in (wh_export, wh_import):
        key = p.add_mutually_exclusive_group(required=p is wh_import)
        key.add_argument(
            "--key-env", metavar="NAME", help="environment variable holding the export key"
        )
        key.add_argument("--key-file", metavar="PATH", help="file holding the export key")
        if p is wh_export:
            key.add_argument(
                "--no-secrets",
                action="store_true",
                help="omit secrets and URL paths (the export cannot be imported)",
            )
    wh_export.add_argument("--output", metavar="FILE", help="write here (mode 0600), not stdout")

    dd = sub.add_parser("datadog", help="Datadog dashboard and monitors")
    dd_sub = dd.add_subparsers(dest="dd_command", metavar="DD_COMMAND", parser_class=_Parser)
    dd_install = dd_sub.add_parser("install", help="create or update the dashboard and monitors")
    dd_install.add_argument(
        "--dry-run", action="store_true", help="print what would change; change nothing"
    )
    return parser


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"ecswatch: {message}", file=sys.stderr)
    return code


async def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)``; SIGTERM and SIGINT set ``stop`` for a graceful exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await main(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _db_upgrade(settings: Settings) -> None:
    from service.migrate import upgrade
    from service.runtime import open_runtime

    async with open_runtime(settings, pool_size=1) as runtime:
        await upgrade(runtime.engine)
    log.info("database_upgraded")


async def _db_downgrade(settings: Settings, revision: str) -> None:
    from service.migrate import current, downgrade
    from service.runtime import open_runtime

    async with open_runtime(settings, pool_size=1) as runtime:
        before = await current(runtime.engine)
        await downgrade(runtime.engine, revision)
        after = await current(runtime.engine)
    log.info("database_downgraded", before=list(before), after=list(after))


async def _db_current(settings: Settings) -> str:
    from service.migrate import current, head_revisions
    from service.runtime import open_runtime

    async with open_runtime(settings, pool_size=1) as runtime:
        revisions = await current(runtime.engine)
    heads = set(head_revisions())
    if not revisions:
        return "none (the database has no ecswatch schema: run `ecswatch db upgrade`)"
    return "\n".join(f"{rev} (head)" if rev in heads else rev for rev in revisions)


def _database_is_local(settings: Settings) -> bool:
    """True for the embedded database, a local socket or a loopback host."""
    if not settings.database_url:
        return True
    from sqlalchemy.engine import make_url

    host = make_url(settings.database_url.replace("postgres://", "postgresql://", 1)).host
    return not host or host.startswith("/") or is_loopback(host)


def _cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from alembic.util import CommandError

    # Migrations encrypt and decrypt webhook secrets: a remote database gets the real key.
    if (
        args.db_command in ("upgrade", "downgrade")
        and settings.secret_key is None
        and not _database_is_local(settings)
    ):
        return _fail(
            f"refusing to migrate a remote database without ECSWATCH_SECRET_KEY "
            f"(db {args.db_command} encrypts or decrypts webhook secrets with it)",
            EXIT_USAGE,
        )
    try:
        if args.db_command == "upgrade":
            eventloop.run(_db_upgrade(settings))
        elif args.db_command == "downgrade":
            eventloop.run(_db_downgrade(settings, args.revision))
        elif args.db_command == "current":
            print(eventloop.run(_db_current(settings)))
        else:
            return _fail("db needs a subcommand: upgrade, downgrade REV or current", EXIT_USAGE)
    except CommandError as exc:  # unknown revision, downgrade "up", …
        return _fail(f"db {args.db_command}: {' '.join(str(exc).split())[:300]}", EXIT_USAGE)
    return EXIT_OK


async def _run(
    settings: Settings, roles: tuple[str, ...], host: str, port: int, *, migrate: bool = True
) -> None:
    from service.migrate import current, head_revisions, upgrade
    from service.roles.supervisor import run_roles
    from service.runtime import open_runtime

    async def main(stop: asyncio.Event) -> None:
        writes, reads = settings.db_pool_sizes(roles)
        async with open_runtime(settings, pool_size=writes, read_pool_size=reads) as runtime:
            if migrate:
                await upgrade(runtime.engine)
            else:
                # Migrations run apart, as a user that owns the schema: refuse to
                # start against a schema this build does not expect.
                found, wanted = set(await current(runtime.engine)), set(head_revisions())
                if found != wanted:
                    raise EcswatchError(
                        f"the database is at revision {', '.join(sorted(found)) or 'none'}, "
                        f"this build needs {', '.join(sorted(wanted))}: "
                        "run `ecswatch db upgrade` first (--no-migrate)"
                    )
            eventloop.settle_gc()  # every role's modules are imported by now
            await run_roles(runtime, roles, stop, host=host, port=port)

    await _run_until_signal(main)


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        roles = parse_roles(args.roles)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if "consumer" in roles and not settings.queue_url:
        return _fail("ECSWATCH_QUEUE_URL is required when the consumer role runs", EXIT_USAGE)
    host = args.host or "127.0.0.1"
    if "api" in roles and not settings.api_tokens and not is_loopback(host):
        return _fail(
            f"refusing to bind the API to {host} without ECSWATCH_API_TOKENS "
            "(set tokens, or bind to 127.0.0.1)",
            EXIT_USAGE,
        )
    if settings.secret_key is None and not (is_loopback(host) and _database_is_local(settings)):
        return _fail(
            "refusing to run off loopback without ECSWATCH_SECRET_KEY "
            "(`ecswatch secrets generate-key` prints one)",
            EXIT_USAGE,
        )
    if "api" in roles and not settings.api_tokens:
        log.warning("api_unauthenticated", detail="no ECSWATCH_API_TOKENS: loopback only")
    eventloop.run(_run(settings, roles, host, args.port, migrate=args.migrate))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from service.demo.run import run_demo
    except ImportError as exc:
        return _fail(f"demo needs moto: pip install 'ecswatch[demo]' ({exc.name} missing)")
    if args.duration is not None and args.duration <= 0:
        return _fail("--duration must be a positive number of seconds", EXIT_USAGE)

    async def demo(stop: asyncio.Event) -> None:
        await run_demo(
            settings, host="127.0.0.1", port=args.port, duration=args.duration, stop=stop
        )

    eventloop.run(_run_until_signal(demo))
    return EXIT_OK


def _cmd_aws_setup(args: argparse.Namespace, settings: Settings) -> int:
    from aiobotocore.session import get_session

    from service.aws.setup import ORGANIZATION_ID, setup_event_pipeline
    from service.runtime import aws_client_kwargs

    if args.aws_command != "setup":
        return _fail("aws needs a subcommand: setup", EXIT_USAGE)
    name = args.queue_name
    if not (1 <= len(name) <= 76) or not all(c.isalnum() or c in "-_" for c in name):
        return _fail(
            "--queue-name: 1 to 76 letters, digits, '-' or '_' (the DLQ adds '-dlq')",
            EXIT_USAGE,
        )
    organization = args.organization
    if organization is not None and not ORGANIZATION_ID.match(organization):
        return _fail(
            "--organization: an organization id is o- and 10 to 32 lowercase letters or digits",
            EXIT_USAGE,
        )

    async def setup() -> str:
        session: Any = get_session()
        kwargs = aws_client_kwargs(settings)
        async with (
            session.create_client("sqs", **kwargs) as sqs,
            session.create_client("events", **kwargs) as events,
        ):
            resources = await setup_event_pipeline(sqs, events, name, organization)
        if resources.organization_bus_arn:
            # What deploy/member-account.yaml needs as CentralEventBusArn.
            return f"{resources.queue_url}\n{resources.organization_bus_arn}"
        return resources.queue_url

    try:
        printed = eventloop.run(setup())
    except Exception as exc:  # botocore: credentials, access denied, endpoint
        return _fail(f"aws setup: {type(exc).__name__}: {exc}")
    print(printed)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from service.consumer.handler import Handler
    from service.consumer.replay import replay_files
    from service.migrate import upgrade
    from service.runtime import open_runtime

    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.exists():
            return _fail(f"replay: {path}: no such file", EXIT_USAGE)
        if not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            return _fail(f"replay: {path}: {what}", EXIT_USAGE)

    async def replay() -> dict[str, int]:
        async with open_runtime(settings, pool_size=2) as runtime:
            await upgrade(runtime.engine)
            from service.alerts.raising import rules_from_settings

            handler = Handler(
                runtime.sessionmaker,
                codedeploy_groups=settings.codedeploy_groups,
                alert_rules=rules_from_settings(settings),
                datadog=settings.datadog_enabled,
            )
            return dict(await replay_files(handler, paths))

    counts = eventloop.run(replay())
    total = sum(v for k, v in counts.items() if k != "retry")
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
    print(f"replayed {total} events from {len(paths)} file(s): {parts or 'nothing'}")
    if counts.get("retry"):
        # "retry" covers a database outage, a failed quarantine write and our own
        # bugs alike (the log names each one): do not claim it was an outage.
        return _fail(
            f"{counts['retry']} events were neither applied nor quarantined "
            "(see the log above); replay the file again once the cause is fixed"
        )
    return EXIT_OK


def _cmd_datadog_install(args: argparse.Namespace, settings: Settings) -> int:
    from service.datadog.install import Verb, install

    actions = eventloop.run(install(settings, dry_run=args.dry_run))
    for action in actions:
        prefix = "would " if args.dry_run and action.verb in (Verb.CREATE, Verb.UPDATE) else ""
        print(f"{prefix}{action.describe()}")
    changes = sum(1 for a in actions if a.verb in (Verb.CREATE, Verb.UPDATE))
    duplicates = sum(1 for a in actions if a.verb is Verb.DUPLICATE)
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {changes} of {len(actions) - duplicates} managed objects")
    return EXIT_OK


async def _rotate_key(settings: Settings) -> tuple[int, int]:
    from service.alerts.webhooks import reencrypt_subscriptions
    from service.cipher import cipher_for
    from service.runtime import open_runtime

    cipher = cipher_for(settings)
    async with (
        open_runtime(settings, pool_size=1) as runtime,
        runtime.sessionmaker() as session,
        session.begin(),
    ):
        return await reencrypt_subscriptions(session, cipher)


def _cmd_secrets(args: argparse.Namespace, settings: Settings) -> int:
    if args.secrets_command == "generate-key":
        from service.cipher import generate_key

        print(generate_key())
        return EXIT_OK
    if args.secrets_command == "rotate-key":
        if settings.secret_key is None:
            return _fail(
                "set ECSWATCH_SECRET_KEY: the new key first, then the old ones", EXIT_USAGE
            )
        rotated, total = eventloop.run(_rotate_key(settings))
        print(f"re-encrypted {rotated} of {total} webhook subscriptions under the newest key")
        return EXIT_OK
    return _fail("secrets needs a subcommand: generate-key or rotate-key", EXIT_USAGE)


async def _webhooks(args: argparse.Namespace, settings: Settings, key: Any) -> str:
    import json

    from service.api import transfer
    from service.cipher import cipher_for
    from service.runtime import open_runtime

    cipher = cipher_for(settings)
    if args.webhooks_command == "import":
        entries = transfer.read_document(transfer.read_input(args.file))
        items = await transfer.validate_entries(
            entries, key, allow_private=settings.webhook_allow_private
        )
    async with (
        open_runtime(settings, pool_size=1) as runtime,
        runtime.sessionmaker() as session,
        session.begin(),
    ):
        if args.webhooks_command == "export":
            doc = await transfer.export_document(session, cipher, key)
            return json.dumps(doc, indent=2) + "\n"
        done = await transfer.import_entries(session, cipher, items)
    return (
        f"imported {len(items)} webhook subscriptions: {done.created} created, "
        f"{done.updated} updated, {done.unchanged} unchanged"
    )


def _cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from service.api import transfer

    if args.webhooks_command not in ("export", "import"):
        return _fail("webhooks needs a subcommand: export or import", EXIT_USAGE)
    key = transfer.key_from(dict(os.environ), args.key_env, args.key_file)
    if args.webhooks_command == "export" and key is None and not args.no_secrets:
        return _fail(
            "name the export key with --key-env or --key-file (a restorable export needs "
            "it), or pass --no-secrets for an export without secrets that cannot be imported",
            EXIT_USAGE,
        )
    result = eventloop.run(_webhooks(args, settings, key))
    if args.webhooks_command == "export":
        transfer.write_output(result, args.output)
    else:
        print(result)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(exc.detail, EXIT_USAGE)
    configure_logging(settings.log_format, settings.log_level)
    try:
        if args.command == "run":
            return _cmd_run(args, settings)
        if args.command == "db":
            return _cmd_db(args, settings)
        if args.command == "replay":
            return _cmd_replay(args, settings)
        if args.command == "aws":
            return _cmd_aws_setup(args, settings)
        if args.command == "demo":
            return _cmd_demo(args, settings)
        if args.command == "secrets":
            return _cmd_secrets(args, settings)
        if args.command == "webhooks":
            return _cmd_webhooks(args, settings)
        if args.command == "datadog" and args.dd_command == "install":
            return _cmd_datadog_install(args, settings)
        return _fail("datadog needs a subcommand: install", EXIT_USAGE)
    except ConfigError as exc:
        return _fail(exc.detail, EXIT_USAGE)
    except EcswatchError as exc:
        return _fail(exc.detail)
    except (OSError, ConnectionError) as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    except DBAPIError as exc:
        # Wrong database name, unknown role, bad password, no privilege: the
        # server's own message names the problem.
        return _fail(f"database: {' '.join(str(exc.orig).split())[:300]}")
    except ArgumentError as exc:
        # A URL the driver cannot use (e.g. ?port=abc), found when it connects.
        reason = " ".join(str(exc).split())[:300]
        return _fail(f"invalid ECSWATCH_DATABASE_URL: {reason}", EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
