"""The analytics half of ``streams/``: Kafka → ClickHouse (the sink, its rows and stores) and
the analysts' way in (``query``, and the query server of an embedded chDB store)."""
