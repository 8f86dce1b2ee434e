"""The ``eventstore`` console command: a thin argparse shell over :mod:`.commands`.

Usage: ``eventstore {create,drop,init,migrate,migrations,check} [--url URL]
[--schema NAME] [--quiet]``, and ``eventstore parked {list,replay,discard} NAME
[--stream S] [--event N ...] [--json]`` with the same options; ``--url``
defaults to ``$EVENTSTORE_URL``. Exit
status 0 on success; on failure one line ``FAILED: <message>`` on stderr and a
non-zero status (1, or 2 for a usage error), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import commands

__all__ = ["main"]

_USAGE_ERROR = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one ``FAILED:`` line instead of usage text."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eventstore",
        description="Create, initialise, migrate and drop a sqlalchemy_eventstore database; "
        "list, replay and discard parked events.",
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "--url",
        default=None,
        help="database URL, e.g. postgresql://user:password@host/db (default: $EVENTSTORE_URL)",
    )
    common.add_argument(
        "--schema", default="public", help="the event store's Postgres schema (default: public)"
    )
    common.add_argument("--quiet", action="store_true", help="print nothing on success")
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
    sub.add_parser(
        "drop",
        parents=[common, maintenance],
        help="drop the database (schema public) or only the schema (any other)",
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
    sub.add_parser("migrations", parents=[common], help="list migrations: applied or pending")
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
    return parser


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


def _run(args: argparse.Namespace) -> None:
    url = args.url or os.environ.get("EVENTSTORE_URL") or ""
    if args.command == "create":
        commands.create(url, args.schema, args.quiet, maintenance_database=args.maintenance_db)
    elif args.command == "drop":
        commands.drop(url, args.schema, args.quiet, maintenance_database=args.maintenance_db)
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
        commands.migrations(url, args.schema, args.quiet)


def _fail(message: str) -> None:
    print(f"FAILED: {' '.join(message.split())}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the process exit status."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as error:
        _fail(str(error))
        return _USAGE_ERROR
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
