"""``python -m sqlalchemy_eventstore``: the ``eventstore`` command."""

from .cli import main

raise SystemExit(main())
