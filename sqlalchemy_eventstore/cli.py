"""The ``eventstore`` console command: a thin argparse shell over :mod:`.commands`.

Usage: ``eventstore COMMAND [--url URL] [--schema NAME] [--quiet]`` where
COMMAND is one of the reference's ``create``, ``drop``, ``init``, ``migrate``,
``migrations``, ``check``, or the operator's ``status``, ``tail [STREAM]``,
``subscriptions [list|reset|delete]`` and ``parked {list,replay,discard}``;
``--url`` defaults to ``$EVENTSTORE_URL``; ``eventstore --version``. Exit
status 0 on success; on failure one line ``FAILED: <message>`` on stderr and a
non-zero status (1, or 2 for a usage error), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

from . import __version__, commands
from .commands._common import _database_name, _parse_url, _show

__all__ = ["main"]

_USAGE_ERROR = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one ``FAILED:`` line instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _version() -> str:
    try:
        return metadata.version("sqlalchemy-eventstore")
    except metadata.PackageNotFoundError:  # run from a source tree
        return __version__


def _common(nested: bool = False) -> _Parser:
    """--url, --schema, --quiet. ``nested``: for the actions of a command that takes
    them too, defaults suppressed so that the command's own values stand."""
    common = _Parser(add_help=False)

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if nested else value

    common.add_argument(
        "--url",
        default=default(None),
        help="database URL, e.g. postgresql://user:password@host/db (default: $EVENTSTORE_URL)",
    )
    common.add_argument(
        "--schema",
        default=default("public"),
        help="the event store's Postgres schema (default: public)",
    )
    common.add_argument(
        "--quiet", action="store_true", default=default(False), help="print nothing on success"
    )
    return common


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eventstore",
        description="Create, initialise, migrate and drop a sqlalchemy_eventstore database; "
        "see its status, follow its events, manage its subscriptions and parked events.",
    )
    parser.add_argument("--version", action="version", version=f"eventstore {_version()}")
    common = _common()
    data_type = _Parser(add_help=False)
    data_type.add_argument(
        "--column-data-type",
        choices=("bytea", "jsonb"),
        default="bytea",
        help="type of the data and metadata columns (default: bytea); used by init, "
        "accepted by create so that both take the same arguments",
    )
    maintenance = _Parser(add_help=False)
    maintenance.add_argument(
        "--maintenance-db",
        default="postgres",
        help="database to connect to while creating or dropping the URL's (default: postgres)",
    )

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser(
        "create",
        parents=[common, data_type, maintenance],
        help="create the database named in the URL, and the schema",
    )
    drop = sub.add_parser(
        "drop",
        parents=[common, maintenance],
        help="drop the database (schema public) or only the schema (any other)",
    )
    drop.add_argument(
        "--yes", action="store_true", help="do not ask for confirmation (needed without a terminal)"
    )
    drop.add_argument(
        "--if-exists",
        action="store_true",
        help="succeed when the database or schema does not exist (else a failure)",
    )
    init = sub.add_parser(
        "init", parents=[common, data_type], help="create the tables, functions and triggers"
    )
    init.add_argument(
        "--no-foreign-keys",
        dest="foreign_keys",
        action="store_false",
        help="create stream_events without its three foreign keys (faster appends; "
        "see the README's 'which schema to pick')",
    )
    sub.add_parser("migrate", parents=[common], help="apply pending migrations")
    sub.add_parser(
        "migrations",
        parents=[common],
        help="list migrations: applied or pending (--quiet: the bare list, for scripts)",
    )
    check = sub.add_parser(
        "check",
        parents=[common],
        help="verify $all and the streams: no holes, every event linked once (exit 1 if not)",
    )
    check.add_argument(
        "--allow-holes",
        action="store_true",
        help="accept holes in $all (left by hard deletes)",
    )
    _add_parked(sub, common)
    _add_operate(sub, common)
    return parser


def _add_operate(sub: Any, common: argparse.ArgumentParser) -> None:
    """``status``, ``tail [STREAM]``, ``subscriptions [list|reset|delete]``."""
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="JSON output")
    status = sub.add_parser(
        "status",
        parents=[common, as_json],
        help="head of $all, streams, each subscription's checkpoint, lag and parked events",
    )
    status.add_argument(
        "--max-lag",
        type=int,
        metavar="N",
        help="exit 1 (naming them) when any subscription is more than N events behind",
    )
    tail = sub.add_parser(
        "tail",
        parents=[common],
        help="print events as they are appended, one line each (Ctrl-C to stop)",
    )
    tail.add_argument(
        "stream", metavar="STREAM", nargs="?", default="$all", help="stream (default: $all)"
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per event")

    subs = sub.add_parser(
        "subscriptions",
        parents=[common, as_json],
        help="list subscriptions (checkpoint, lag, parked, state); reset or delete one",
    )
    actions = subs.add_subparsers(
        dest="subscriptions_command", metavar="ACTION", parser_class=_Parser
    )
    nested = _common(nested=True)
    target = _Parser(add_help=False)
    target.add_argument("name", metavar="NAME", help="the subscription's name")
    target.add_argument(
        "--stream",
        default="$all",
        help="the subscription's stream (default: $all, an all-streams subscription)",
    )
    listing = actions.add_parser("list", parents=[nested], help="list the subscriptions")
    listing.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON lines"
    )
    reset = actions.add_parser(
        "reset",
        parents=[nested, target],
        help="move the checkpoint (the subscription must not be running)",
    )
    reset.add_argument(
        "--to", type=int, required=True, metavar="N", help="the new checkpoint (0: from the start)"
    )
    actions.add_parser(
        "delete",
        parents=[nested, target],
        help="delete the subscription and its parked events (it must not be running)",
    )


def _add_parked(sub: Any, common: argparse.ArgumentParser) -> None:
    """``parked {list,replay,discard} NAME [--stream S]``: a subscription's parked events."""
    target = _Parser(add_help=False)
    target.add_argument("name", metavar="NAME", help="the subscription's name")
    target.add_argument(
        "--stream",
        default="$all",
        help="the subscription's stream (default: $all, an all-streams subscription)",
    )
    events = _Parser(add_help=False)
    events.add_argument(
        "--event",
        dest="events",
        metavar="N",
        type=int,
        nargs="+",
        action="extend",
        default=None,
        help="only these event numbers (positions in the subscription's stream; repeatable)",
    )
    parked = sub.add_parser("parked", help="list, replay or discard a subscription's parked events")
    actions = parked.add_subparsers(dest="parked_command", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    listing = actions.add_parser(
        "list", parents=[common, target], help="list the parked events, in event order"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    actions.add_parser(
        "replay",
        parents=[common, target, events],
        help="deliver parked events to the subscription again, in order",
    )
    actions.add_parser(
        "discard", parents=[common, target, events], help="remove parked events undelivered"
    )


def _run_parked(url: str, args: argparse.Namespace) -> None:
    options: dict[str, Any] = {"stream_uuid": args.stream}
    if args.parked_command == "list":
        commands.parked_list(url, args.name, args.schema, args.quiet, as_json=args.json, **options)
        return
    change = commands.parked_replay if args.parked_command == "replay" else commands.parked_discard
    change(url, args.name, args.schema, args.quiet, event_numbers=args.events, **options)


def _confirm_drop(url: str, args: argparse.Namespace) -> None:
    """Ask before dropping; refuse when there is no terminal to ask on (and no --yes)."""
    if args.yes:
        return
    given, _ = _parse_url(url)
    if args.schema == "public":
        what = f'database "{_database_name(given)}"'
    else:
        what = f'schema "{args.schema}" of database "{_database_name(given)}"'
    if not sys.stdin.isatty():
        raise commands.CommandError(
            f"refusing to drop the {what} without --yes (standard input is not a terminal)"
        )
    answer = input(
        f"Drop the event store's {what} on {_show(given)}, with every event in it? [y/N] "
    )
    if answer.strip().lower() not in ("y", "yes"):
        raise commands.CommandError(f"the {what} was not dropped (not confirmed)")


def _run_tail(url: str, args: argparse.Namespace) -> None:
    """Follow until SIGINT or SIGTERM, then return (exit status 0)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        commands.tail(url, args.stream, args.schema, args.quiet, as_json=args.json, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_subscriptions(url: str, args: argparse.Namespace) -> None:
    action = args.subscriptions_command or "list"
    if action == "list":
        commands.subscriptions_list(url, args.schema, args.quiet, as_json=args.json)
    elif action == "reset":
        commands.subscription_reset(
            url, args.name, args.to, args.schema, args.quiet, stream_uuid=args.stream
        )
    else:
        commands.subscription_delete(
            url, args.name, args.schema, args.quiet, stream_uuid=args.stream
        )


def _run(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("EVENTSTORE_URL") or ""
    if args.command == "create":
        commands.create(url, args.schema, args.quiet, maintenance_database=args.maintenance_db)
    elif args.command == "drop":
        _confirm_drop(url, args)
        commands.drop(
            url,
            args.schema,
            args.quiet,
            maintenance_database=args.maintenance_db,
            if_exists=args.if_exists,
        )
    elif args.command == "status":
        commands.status(url, args.schema, args.quiet, as_json=args.json, max_lag=args.max_lag)
    elif args.command == "tail":
        _run_tail(url, args)
    elif args.command == "subscriptions":
        _run_subscriptions(url, args)
    elif args.command == "init":
        commands.init(
            url,
            args.schema,
            args.quiet,
            column_data_type=args.column_data_type,
            foreign_keys=args.foreign_keys,
        )
    elif args.command == "migrate":
        commands.migrate(url, args.schema, args.quiet)
    elif args.command == "check":
        commands.check(url, args.schema, args.quiet, allow_holes=args.allow_holes)
    elif args.command == "parked":
        _run_parked(url, args)
    else:
        commands.migrations(url, args.schema, args.quiet, print_list=args.quiet)


def _fail(message: str) -> None:
    print(f"FAILED: {' '.join(message.split())}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the process exit status."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as error:
        _fail(str(error))
        return _USAGE_ERROR
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    try:
        _run(args)
    except commands.CommandError as error:
        _fail(str(error))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:  # a bug: still one line, but say what it was
        _fail(f"unexpected {type(error).__name__}: {error}")
        return 1
    return 0
