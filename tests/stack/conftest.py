"""The real local stack (started by `smartport stack up`, reused), and the ``stack`` marker on
every test of this folder, so ``-m "not stack"`` never boots a service."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartport.settings import Settings

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Settings:
    """The running local stack; started here if `make test`'s set-up did not already."""
    from deploy import stack as local_stack

    statuses = local_stack.status(settings)
    if not all(s.healthy for s in statuses):
        local_stack.up(settings)
    return settings
