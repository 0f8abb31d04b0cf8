"""The streams worker's logging: faust's terminal spinner set the root logger to DEBUG at
level warning and above, so every debug record of every library was built, per event."""

from __future__ import annotations

import logging

import faust

from streams.app import new_worker


def test_a_worker_at_level_warning_does_not_build_debug_records() -> None:
    worker = new_worker(faust.App("logging-test"), "warning")
    root = logging.Logger("a-root-of-our-own")
    root.addHandler(logging.NullHandler())
    root.setLevel(logging.WARNING)
    worker.on_setup_root_logger(root, logging.WARNING)
    assert not root.isEnabledFor(logging.DEBUG)
