"""URLs fit for errors and logs: passwords and query strings (API keys) replaced."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and the values of its query hidden."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unparsable URL>"
    if parts.username is None and not parts.query:
        return url
    netloc = parts.netloc
    if parts.username is not None:
        user = parts.username + (":***" if parts.password is not None else "")
        netloc = f"{user}@{host}{port}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
