"""Every example runs, against the test database, so none of them can rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_runs_and_prints_what_it_appended(database_url: URL, admin_engine: Engine):
    env = dict(os.environ, DATABASE_URL=database_url.render_as_string(hide_password=False))
    try:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "quickstart.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert "#1 __main__.AccountOpened" in lines[0]
        assert "#2 MoneyDeposited: {'amount': 100}" in lines[1]
        assert "stream version 2, status created" in result.stdout
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text('DROP SCHEMA IF EXISTS "quickstart" CASCADE'))
