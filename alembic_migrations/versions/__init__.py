"""Revisions of the ``eventstore`` branch (Alembic skips this file)."""
