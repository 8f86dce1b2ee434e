"""The event store's Alembic branch (label ``eventstore``).

Installed as ``sqlalchemy_eventstore.alembic_migrations``; add its ``versions``
directory (``sqlalchemy_eventstore.migrations.version_location()``) to your
Alembic ``version_locations``. See README.md beside this file.
"""
