"""Change notifications: the NOTIFY payload parser and the LISTEN connection.

Internal: nothing here is part of the public API. The store's subscriptions
build on :class:`~.listener.Listener`, which turns the ``"<schema>.events"``
channel that the ``notify_events`` trigger writes to into parsed
:class:`~.payload.Notification` callbacks.
"""
