"""smartport: the thin application shell (CLI and settings) over ingest, streams, anchoring."""

__version__ = "0.1.0"
