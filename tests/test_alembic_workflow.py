"""The day-to-day Alembic workflow of docs/migrations.md, run with the real ``alembic`` command.

A project adds the ``eventstore`` branch through the portable package-resource
entry in ``version_locations``, starts its own branch with ``--head=base``,
then names its head (``--head=app@head``) since the script directory has two,
and ``upgrade heads`` applies both branches.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import alembic
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore.migrations import VERSION_LOCATION_RESOURCE

from .test_alembic_branch import (
    ENV_PY,
    HEAD_REVISION,
    MODELS,
    alembic_cli,
    db,  # noqa: F401 (fixture)
    fresh_database,  # noqa: F401 (fixture)
    heads_in_database,
    table_names,
)


def write_project(root: Path, url: URL) -> Path:
    """An application with an Alembic environment and no revision of its own yet."""
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "models.py").write_text(MODELS)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    shutil.copy(template, root / "migrations" / "script.py.mako")
    ini = root / "alembic.ini"
    ini.write_text(
        "\n".join(
            [
                "[alembic]",
                "script_location = %(here)s/migrations",
                "path_separator = space",
                f"version_locations = %(here)s/migrations/versions {VERSION_LOCATION_RESOURCE}",
                "sqlalchemy.url = " + url.render_as_string(hide_password=False).replace("%", "%%"),
                "",
            ]
        )
    )
    return ini


def ok(result) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def revision_id(output: str) -> str:
    match = re.search(r"versions/([0-9a-f]+)_", output)
    assert match, output
    return match.group(1)


def test_a_project_starts_its_branch_beside_the_event_stores(
    tmp_path: Path,
    fresh_database: URL,  # noqa: F811
    db: Engine,  # noqa: F811
) -> None:
    ini = write_project(tmp_path, fresh_database)
    versions = str(tmp_path / "migrations" / "versions")

    # The first revision of the project: its own branch, from base.
    first = revision_id(
        ok(
            alembic_cli(
                ini,
                "revision",
                "-m",
                "orders",
                "--head=base",
                "--branch-label=app",
                f"--version-path={versions}",
            )
        )
    )
    heads = ok(alembic_cli(ini, "heads"))
    assert HEAD_REVISION in heads
    assert first in heads

    # Two heads now: a plain `revision` must be told which.
    refused = alembic_cli(ini, "revision", "-m", "more")
    assert refused.returncode != 0
    assert "Multiple heads" in refused.stdout + refused.stderr
    second = revision_id(ok(alembic_cli(ini, "revision", "-m", "more", "--head=app@head")))
    (script,) = (tmp_path / "migrations" / "versions").glob(f"{second}_*.py")
    assert re.search(rf"down_revision\b.*['\"]{first}['\"]", script.read_text())

    ok(alembic_cli(ini, "upgrade", "heads"))
    assert heads_in_database(db) == {HEAD_REVISION, second}
    assert "streams" in table_names(db, "public")
    assert ok(alembic_cli(ini, "current")).count("(head)") == 2
