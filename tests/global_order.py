"""Run a contract module's ``store`` tests in both global orders.

A module imports :func:`global_order` (``from .global_order import
global_order``): its ``store`` fixture is then made once with
``global_order="lock"`` and once with ``"sequencer"``, each on both drivers.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["lock", "sequencer"])
def global_order(request: pytest.FixtureRequest) -> str:
    """Both ways of numbering $all (SPEC: every contract test passes in both)."""
    return str(request.param)
