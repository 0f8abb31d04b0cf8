"""One way for analysts (and the demo) to ask the configured ClickHouse store a question.

A server is asked directly. An embedded chDB store is locked by the process that owns it (the
sink), which answers on ``query_port``; only when nobody owns it may the caller open it.
"""

from __future__ import annotations

from smartport.errors import ConfigError, InputRejected, StackError
from smartport.settings import Settings
from streams.analytics import query_server
from streams.analytics.migrations import ensure_schema
from streams.analytics.store import Result, StoreLocked, open_store


def query(settings: Settings, sql: str, *, open_embedded: bool = True) -> Result:
    """Columns and rows of ``sql``, run read-only and bounded (``Store.read``): an analyst's
    question never changes the store. ``open_embedded=False`` never opens a chDB store here (a
    caller that runs beside a sink that may be restarting must not steal its lock).

    Raises InputRejected when ClickHouse refuses the SQL, StackError when the store or the
    process owning it does not answer.
    """
    url = settings.resolved_clickhouse_url
    if url.startswith("chdb://") and not open_embedded:
        return _ask_owner(settings, sql, f"the chDB store at {url}")
    try:
        store = open_store(url)
    except StoreLocked as exc:
        return _ask_owner(settings, sql, str(exc))
    try:
        ensure_schema(store, settings.clickhouse_ttl_days)
        return store.read(sql)
    except (StackError, ConfigError):
        raise
    except Exception as error:
        raise InputRejected(f"ClickHouse refused the query: "
                            f"{str(error).splitlines()[0]}") from None
    finally:
        store.close()


def _ask_owner(settings: Settings, sql: str, owned: str) -> Result:
    try:
        return query_server.remote_query(sql, settings.query_port, settings.query_token_file)
    except PermissionError as error:
        raise ConfigError(f"the query server on 127.0.0.1:{settings.query_port} refused: "
                          f"{error}") from None
    except OSError:
        raise StackError(f"{owned} is owned by a process that does not answer queries on "
                         f"127.0.0.1:{settings.query_port}: stop it or start it with "
                         "`smartport sink`") from None
    except ValueError as error:
        raise InputRejected(f"ClickHouse refused the query: {error}") from None
