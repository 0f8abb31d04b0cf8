"""Stream processing: the ClickHouse sink (and, next, the customs rules and alerts)."""
