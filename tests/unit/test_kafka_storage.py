"""The id a KRaft node's storage is formatted with (kafka-storage format --cluster-id)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from deploy.services import Kafka


def test_a_cluster_id_never_starts_with_a_dash(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A random id whose base64 begins with '-' (1 in 64) read as an option: kafka-storage
    refused it ("--cluster-id: expected one argument") and the broker never started."""
    dash_first = uuid.UUID(bytes=b"\xfb" + bytes(15))  # 0b111110... is '-' in urlsafe base64
    drawn = iter([dash_first, uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))

    cluster_id = Kafka(tmp_path, partitions=1, node_id=1, brokers=3)._cluster_id()

    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22  # 16 bytes, base64 without padding
    assert (tmp_path / "kafka" / "cluster-of-3.id").read_text() == cluster_id
