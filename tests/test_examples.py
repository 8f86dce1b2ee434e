"""Every example runs, against the test database, so none of them can rot."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def run_example(database_url: URL, admin_engine: Engine) -> Iterator[Callable[[str, str], str]]:
    """Run ``examples/<name>.py`` on the test database; its stdout. The schema
    the example uses is dropped afterwards."""
    schemas: list[str] = []

    def run(name: str, schema: str) -> str:
        schemas.append(schema)
        # A plain postgresql:// URL, as the docs print it: SQLAlchemy then picks
        # the driver (psycopg 3 on 2.1, psycopg2 on 2.0) for Flask-SQLAlchemy.
        plain = database_url.set(drivername="postgresql")
        env = dict(os.environ, DATABASE_URL=plain.render_as_string(hide_password=False))
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / f"{name}.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    yield run
    with admin_engine.connect() as conn:
        for schema in schemas:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_quickstart_runs_and_prints_what_it_appended(run_example: Callable[[str, str], str]):
    out = run_example("quickstart", "quickstart")
    lines = out.splitlines()
    assert "#1 __main__.AccountOpened" in lines[0]
    assert "#2 MoneyDeposited: {'amount': 100}" in lines[1]
    assert "stream version 2, status created" in out


def test_flask_app_commits_or_rolls_back_rows_and_events_together(
    run_example: Callable[[str, str], str],
):
    lines = run_example("flask_app", "flask_example").splitlines()
    assert lines == [
        "POST /orders -> 201 {'reference': 'A-<run>', 'total': 30}",
        "POST /orders/failing -> 402 {'error': 'card declined'}",
        "GET /orders/A-<run>/events -> 200 {'events': "
        "[{'data': {'reference': 'A-<run>', 'total': 30}, 'type': 'OrderPlaced'}]}",
        "GET /orders/B-<run>/events -> 404 {'error': 'no such order'}",
        "orders of this run: ['A-<run>']",
        "the subscription saw: ['A-<run>']",
    ]


def test_fastapi_app_appends_in_the_request_transaction_and_projects_by_subscription(
    run_example: Callable[[str, str], str],
):
    lines = run_example("fastapi_app", "fastapi_example").splitlines()
    assert lines == [
        "POST /orders -> 201 {'reference': 'A-<run>', 'total': 30}",
        "POST /orders -> 402 {'detail': 'card declined'}",
        "GET /orders/A-<run>/events -> 200 {'events': "
        "[{'type': 'OrderPlaced', 'data': {'reference': 'A-<run>', 'total': 30}}]}",
        "GET /orders/B-<run>/events -> 404 {'detail': 'no such order'}",
        "orders of this run: ['A-<run>']",
        "the projection added: {'orders': 1, 'revenue': 30}",
    ]


def test_bank_account_reloads_from_its_snapshot(run_example: Callable[[str, str], str]):
    out = run_example("bank_account", "bank_account_example")
    assert "deposit   20: balance 140 (version 5) + snapshot" in out
    assert "deposit    5: balance 110 (version 10) + snapshot" in out
    assert "loaded from snapshot at version 10 + 2 later events: balance 115" in out
    assert "full replay of 12 events: balance 115" in out
    assert "concurrent save rejected: expected version 12 is stale" in out
    assert out.splitlines()[-1] == "final balance 116 at version 13"


def test_projector_keeps_its_read_model_and_checkpoint_together(
    run_example: Callable[[str, str], str],
):
    lines = run_example("projector", "projector_example").splitlines()
    assert lines == [
        "projected up to event 6: applied 6",
        "redelivered 6 events: applied 0",
        "live event 7 applied",
        "read model:",
        "  alice: balance 70, 1 deposits",
        "  bob: balance 57, 2 deposits",
        "  carol: balance 25, 2 deposits",
    ]


def test_cluster_demo_hands_the_subscription_over(run_example: Callable[[str, str], str]):
    lines = run_example("cluster_demo", "cluster_demo_example").splitlines()
    # At-least-once: a kill between handling and acking may redeliver one event.
    lines = [line for line in lines if "redelivered" not in line]
    assert lines == [
        "worker-1 started",
        "worker-1 holds the subscription",
        "worker-2 started",
        "event 1 received by worker-1",
        "event 2 received by worker-1",
        "event 3 received by worker-1",
        "killing worker-1",
        "worker-2 took over the subscription",
        "event 4 received by worker-2",
        "event 5 received by worker-2",
        "event 6 received by worker-2",
        "worker-2 stopped",
    ]
