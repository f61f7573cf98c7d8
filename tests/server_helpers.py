"""Helpers for server tests: raw HTTP calls and server-sent-event parsing, stdlib only."""

from __future__ import annotations

import http.client as httplib
import json
from typing import Any
from urllib.parse import urlparse


def http(
    url: str, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One raw request; returns (status, headers, body)."""
    parts = urlparse(url)
    conn = httplib.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post_json(url: str, path: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, raw = http(url, "POST", path, json.dumps(payload), headers)
    return status, json.loads(raw)


def sse_events(raw: bytes) -> list[Any]:
    """The JSON payloads of a server-sent-event stream, up to `[DONE]` (which must end it)."""
    events = []
    blocks = [b for b in raw.decode().split("\n\n") if b.strip()]
    assert blocks[-1] == "data: [DONE]", blocks[-1]
    for block in blocks[:-1]:
        assert block.startswith("data: "), block
        events.append(json.loads(block[len("data: ") :]))
    return events
