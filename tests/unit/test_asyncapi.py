import yaml

from schemas import asyncapi, topics
from schemas.registry import MESSAGES


def test_committed_document_matches_the_models() -> None:
    committed = yaml.safe_load(asyncapi.ASYNCAPI_PATH.read_text())
    assert committed == asyncapi.build(), "run `smartport schemas asyncapi` to regenerate"


def test_every_kafka_topic_and_message_is_documented() -> None:
    document = asyncapi.build()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert set(topics.KAFKA_TOPICS) <= addresses
    assert set(document["components"]["messages"]) == set(MESSAGES)


def test_every_reference_resolves() -> None:
    document = asyncapi.build()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in refs(value)]
        return []

    for ref in refs(document):
        node: object = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict), f"dangling reference {ref}"
            assert part in node, f"dangling reference {ref}"
            node = node[part]
