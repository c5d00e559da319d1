"""The Prefect server a command is pointed at (PREFECT_API_URL): checked before any work.

Without this, a server not started, a URL without its ``/api`` or without a scheme surfaced as an
httpx or Prefect exception, reported as an internal error (exit 70) halfway into the command.
"""

from __future__ import annotations

from phm.exceptions import ConfigError, ServerUnavailable


def shown_url(url: str) -> str:
    """A URL as it can be printed: without a user name or password in it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else (parts.hostname or "")
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def check_server(url: str, unset_ok: bool = False) -> None:
    """The Prefect server at PREFECT_API_URL answers its health check, before any work (phm
    deploy registers nothing, phm run and phm ingest start no flow): an operator's wrong URL or a
    server not started is named as such, not an internal error from the HTTP library.
    ``unset_ok``: the command also runs with no server (phm run, phm ingest), and says so."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    shown = shown_url(url)
    example = "e.g. http://127.0.0.1:4200/api; docs/scheduling.md" + (
        "; or unset PREFECT_API_URL to run without a Prefect server" if unset_ok else "")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"PREFECT_API_URL={shown}: not an http:// or https:// URL ({example})")
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is None:
        return
    if isinstance(problem, PrefectHTTPStatusError):
        status = problem.response.status_code
        hint = ("PREFECT_API_URL must be the server's API, ending in /api" if status == 404 else
                "check PREFECT_API_KEY or PREFECT_API_AUTH_STRING" if status in (401, 403) else
                "see the server's log")
        raise ServerUnavailable(f"PREFECT_API_URL={shown}: the server answered HTTP {status} to its health check: "
                                f"{hint} ({example})")
    if isinstance(problem, httpx.TransportError):
        raise ServerUnavailable(f"PREFECT_API_URL={shown}: no Prefect server answers there "
                                f"({type(problem).__name__}): start it (prefect server start) or correct "
                                f"PREFECT_API_URL ({example})")
    raise ServerUnavailable(f"PREFECT_API_URL={shown}: the server's health check failed "
                            f"({type(problem).__name__}) ({example})")
