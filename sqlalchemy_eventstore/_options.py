"""The constructor options both stores share: checked once, the same way."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from . import _validation as check
from .serializers import JsonbSerializer, JsonSerializer, Serializer

__all__ = ["StoreOptions", "connect_args"]


class StoreOptions:
    """The checked options of a store (ValueError/TypeError naming a bad one)."""

    def __init__(
        self,
        *,
        schema: Any,
        serializer: Serializer | None,
        column_data_type: Any,
        subscription_retry_interval: Any,
        name: Any,
        timeout: Any,
        foreign_keys: Any,
        poll_interval: Any = 1.0,
        transaction_pooling: Any = False,
        listen: Any = True,
    ) -> None:
        if not isinstance(foreign_keys, bool):
            raise TypeError("foreign_keys must be a bool")
        if column_data_type not in ("bytea", "jsonb"):
            raise ValueError(
                f"column_data_type must be 'bytea' or 'jsonb', got {column_data_type!r}"
            )
        chosen: Serializer
        if serializer is not None:
            chosen = serializer
        elif column_data_type == "jsonb":
            chosen = JsonbSerializer()
        else:
            chosen = JsonSerializer()
        for member in ("serialize", "deserialize"):
            if not callable(getattr(chosen, member, None)):
                raise TypeError(f"serializer must have a {member}() method")
        serializer_type = getattr(chosen, "column_data_type", column_data_type)
        if serializer_type != column_data_type:
            raise ValueError(
                f"serializer {type(chosen).__name__} writes {serializer_type!r} but "
                f"column_data_type is {column_data_type!r}; use a matching serializer"
            )
        self.schema = check.check_schema(schema)
        if isinstance(subscription_retry_interval, bool) or not isinstance(
            subscription_retry_interval, (int, float)
        ):
            raise TypeError("subscription_retry_interval must be a number of seconds")
        if subscription_retry_interval <= 0:
            raise ValueError("subscription_retry_interval must be > 0")
        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a str or None")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise TypeError("poll_interval must be a number of seconds")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be > 0")
        if not isinstance(transaction_pooling, bool):
            raise TypeError("transaction_pooling must be a bool")
        if not isinstance(listen, bool):
            raise TypeError("listen must be a bool")
        self.listen = listen
        self.poll_interval = float(poll_interval)
        self.transaction_pooling = transaction_pooling
        self.timeout = check.check_timeout(timeout)
        self.serializer = chosen
        self.column_data_type: str = column_data_type
        self.subscription_retry_interval = float(subscription_retry_interval)
        self.name: str | None = name
        self.foreign_keys = foreign_keys


def connect_args(url: URL, name: str | None, *, pooler: bool) -> dict[str, Any]:
    """The DBAPI connect arguments of an engine a store makes from ``url``.

    Names the connections in pg_stat_activity (unless the URL does), and,
    behind a transaction-mode pooler (``pooler``), turns off the driver's
    automatic server-side prepared statements, which would meet server
    connections that never saw them.
    """
    args: dict[str, Any] = {}
    application_name = name or "sqlalchemy_eventstore"
    driver = url.drivername
    if driver == "postgresql+asyncpg":
        if "application_name" not in url.query:
            args["server_settings"] = {"application_name": application_name}
        if pooler and "prepared_statement_cache_size" not in url.query:
            args["statement_cache_size"] = 0
            args["prepared_statement_cache_size"] = 0
        return args
    if "application_name" not in url.query:
        args["application_name"] = application_name
    if pooler and driver == "postgresql+psycopg" and "prepare_threshold" not in url.query:
        args["prepare_threshold"] = None
    return args
