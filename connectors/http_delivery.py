"""What the HTTP sinks (:mod:`~kizashi.connectors.elastic`, :mod:`~kizashi.connectors.splunk_hec`,
:mod:`~kizashi.connectors.webhook`) share: a POST whose transport failures are retryable
:class:`~kizashi.connectors.base.DeliveryError`, and one rule for which HTTP answers are worth
retrying (5xx and 429 are; auth and format errors are not)."""

from __future__ import annotations

from typing import Any

import httpx

from .base import DeliveryError


def post(client: httpx.Client, name: str, url: str, **kw: Any) -> httpx.Response:
    """``client.post``; a connection error or timeout is a retryable :class:`DeliveryError`."""
    try:
        return client.post(url, **kw)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{name}: {type(exc).__name__}: {exc}", retryable=True) from exc


def retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def json_object(name: str, resp: httpx.Response) -> dict[str, Any]:
    """The JSON object a 2xx answer must carry; anything else (an HTML error page from a proxy, a
    truncated body) is a retryable :class:`DeliveryError`, not a crash."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DeliveryError(f"{name}: HTTP {resp.status_code} answer is not a JSON object: {resp.text[:200]!r}",
                            retryable=True)
    return data


def check(name: str, resp: httpx.Response) -> None:
    """Raise :class:`DeliveryError` for a non-2xx answer."""
    if resp.status_code < 300:
        return
    raise DeliveryError(f"{name}: HTTP {resp.status_code}: {resp.text[:300]}",
                        retryable=retryable_status(resp.status_code))
