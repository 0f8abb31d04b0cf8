"""Fixtures shared by both suites: the settings (defaults, plus SMARTPORT_* from the
environment). The real local stack is a fixture of ``tests/stack/`` only, so a test under
``tests/unit/`` cannot reach a service."""

from __future__ import annotations

import pytest

from smartport.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()
