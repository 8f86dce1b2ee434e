"""Time-ordered event ids: UUID version 7 (RFC 9562), generated client-side.

Event ids are the ``events`` primary key and half of ``stream_events``'. Random
(version 4) ids land on random leaf pages of those B-trees, so once the indexes
outgrow the cache every append and every ``$all`` page touches pages all over
them. Version 7 ids start with the time in milliseconds: an append's ids sit
next to the previous append's, and a page of ``$all`` reads neighbouring keys.
"""

from __future__ import annotations

import os
import time

__all__ = ["uuid7s"]

_VERSION_7 = 0x7000
_VARIANT = 0x8000_0000_0000_0000
_RAND_B = 0x3FFF_FFFF_FFFF_FFFF


def uuid7s(n: int) -> list[str]:
    """``n`` new version-7 UUIDs in canonical text form, ascending within the call.

    48 bits of Unix time in ms, the version, a 12-bit counter (the position in
    the call, so one call's ids sort in order), the variant and 62 random bits.
    """
    ms = time.time_ns() // 1_000_000
    random = os.urandom(8 * n)
    ids = []
    for i in range(n):
        low = int.from_bytes(random[8 * i : 8 * i + 8], "big") & _RAND_B | _VARIANT
        h = f"{ms:012x}{_VERSION_7 | (i & 0xFFF):04x}{low:016x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids
