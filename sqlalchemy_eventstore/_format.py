"""Durations for people, as the status command and the admin page show them."""

from __future__ import annotations

__all__ = ["duration"]


def duration(seconds: float | None) -> str:
    """ "-" for none, else whole seconds, minutes, hours or days ("42 s", "3 min")."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
