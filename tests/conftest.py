"""Fixtures: settings and the real local stack (started by `smartport stack up`, reused)."""

from __future__ import annotations

import pytest

from smartport.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The running local stack; started here if `make test`'s set-up did not already."""
    from deploy import stack as local_stack

    statuses = local_stack.status(settings)
    if not all(s.healthy for s in statuses):
        local_stack.up(settings)
    return settings
