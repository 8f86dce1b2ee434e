"""The README's first example runs as written (on the test database)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(database_url: URL, admin_engine: Engine, capsys):
    source = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert source is not None
    code = source.group(1)
    assert 'EventStore("postgresql://postgres@localhost/app", schema="events")' in code
    schema = f"readme_{uuid.uuid4().hex[:8]}"
    url = database_url.render_as_string(hide_password=False)
    code = code.replace('"postgresql://postgres@localhost/app"', repr(url))
    code = code.replace('schema="events"', f"schema={schema!r}")
    namespace: dict = {}
    try:
        exec(compile(code, str(README), "exec"), namespace)
        namespace["store"].close()
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["1 AccountOpened {'owner': 'Ada'}", "2 MoneyDeposited {'amount': 100}", "3"]


def test_readme_async_example_runs(database_url: URL, admin_engine: Engine, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "AsyncEventStore" in block)
    assert '"postgresql+asyncpg://postgres@localhost/app", schema="events"' in code
    schema = f"readme_{uuid.uuid4().hex[:8]}"
    url = database_url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    code = code.replace('"postgresql+asyncpg://postgres@localhost/app"', repr(url))
    code = code.replace('schema="events"', f"schema={schema!r}")
    body = "".join(f"    {line}\n" for line in code.splitlines())
    namespace: dict = {}
    try:
        exec(
            compile(
                "import asyncio\nfrom sqlalchemy_eventstore import EventData\n"
                f"async def main():\n{body}\nasyncio.run(main())\n",
                str(README),
                "exec",
            ),
            namespace,
        )
        with admin_engine.connect() as conn:
            checkpoint = conn.execute(
                text(f'SELECT last_seen FROM "{schema}".subscriptions')
            ).scalar_one()
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    assert capsys.readouterr().out.splitlines() == ["1 AccountOpened {'owner': 'Ada'}"]
    # The subscription received and acked that event before the store closed.
    assert checkpoint == 1
