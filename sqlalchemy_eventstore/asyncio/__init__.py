"""The asyncio API: :class:`AsyncEventStore`, the store's storage calls as coroutines.

On SQLAlchemy's async engine with psycopg 3 (``postgresql+psycopg://``) or
asyncpg (``postgresql+asyncpg://``); install the ``asyncio`` extra.
"""

from .store import AsyncEvents, AsyncEventStore
from .subscription import AsyncSubscription

__all__ = ["AsyncEventStore", "AsyncEvents", "AsyncSubscription"]
