"""Push STIX 2.1 bundles into a TAXII 2.1 collection (OASIS TAXII 2.1, section 5.5 "Add Objects").

Uses ``taxii2-client``. The server answers with a status resource; the sink waits (bounded) until it is
final and fails when any object failed. Object ids and versions are deterministic
(:mod:`kizashi.connectors.stix`), so a re-sent batch adds nothing new on the server.

The ``extension-definition`` is left out by default (``publish_extension_definition=False``):
medallion 3.0.0 cannot read back objects with a top-level ``version`` property. Publish it once,
separately, to servers that can (:meth:`TaxiiSink.publish_extension_definition`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import requests
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.stix import StixFormatter, extension_definition, kizashi_identity, stix_id
from kizashi.engine.events import Alert, DetectionEvent
from taxii2client.exceptions import AccessError, TAXIIServiceException
from taxii2client.v21 import Collection


class TaxiiSink:
    """``TaxiiSink(url, user=..., password=...)``: one bundle per batch, pushed with
    ``Collection.add_objects``. ``url`` is the collection URL, or the API root URL when
    ``collection`` (the collection id) is given. ``verify`` may be a CA bundle path."""

    def __init__(
        self,
        url: str,
        collection: str | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        formatter: StixFormatter | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        poll_interval: float = 0.5,
        publish_extension_definition: bool = False,
        name: str = "taxii",
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"TAXII url must be an http(s) URL, not {url!r}")
        collection_url = url
        if collection:
            collection_url = url.rstrip("/") + f"/collections/{collection}/"
        self.collection_url = collection_url if collection_url.endswith("/") else collection_url + "/"
        self.formatter = formatter or StixFormatter()
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.with_extension_definition = publish_extension_definition
        self.name = name
        self._collection = Collection(self.collection_url, user=user, password=password, verify=verify)

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        bundle = self.formatter.bundle(alerts, events)
        if not self.with_extension_definition:
            bundle["objects"] = [o for o in bundle["objects"] if o["type"] != "extension-definition"]
        self._add(bundle)

    def publish_extension_definition(self) -> None:
        """Add kizashi's identity and extension-definition on their own (for servers that store them)."""
        objects = [kizashi_identity(), extension_definition()]
        self._add({"type": "bundle", "id": stix_id("bundle", "kizashi-definitions"), "objects": objects})

    def _add(self, bundle: dict) -> None:
        try:
            status = self._collection.add_objects(json.dumps(bundle, ensure_ascii=False))
            if status.status != "complete":
                status.wait_until_final(poll_interval=self.poll_interval, timeout=self.timeout)
        except AccessError as exc:
            raise DeliveryError(f"{self.name}: {exc}", retryable=False) from exc
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            retryable = code >= 500 or code in (408, 429)
            raise DeliveryError(f"{self.name}: {self.collection_url}: HTTP {code}", retryable=retryable) from exc
        except (requests.RequestException, TAXIIServiceException) as exc:
            raise DeliveryError(f"{self.name}: {self.collection_url}: {exc}", retryable=True) from exc
        if status.status != "complete":
            raise DeliveryError(
                f"{self.name}: status {status.id} still {status.status!r} after {self.timeout}s", retryable=True
            )
        if status.failure_count:
            versions = {o["id"]: o.get("modified") or o.get("created") for o in bundle["objects"]}
            failed = [f for f in (status.failures or []) if not self._already_stored(f.get("id"), versions)]
            if failed or not status.failures:
                reasons = "; ".join(f"{f.get('id')}: {f.get('message')}" for f in failed[:5])
                raise DeliveryError(
                    f"{self.name}: {status.failure_count} object(s) rejected: {reasons}", retryable=False
                )

    def _already_stored(self, obj_id: str | None, versions: Mapping[str, str | None]) -> bool:
        """Servers (medallion among them) report an object they already hold in this version as a
        failure; that is a successful re-send, not an error."""
        if not obj_id or obj_id not in versions:
            return False
        try:
            found = self._collection.get_object(obj_id, version=versions[obj_id] or "last")
        except (requests.RequestException, TAXIIServiceException, AccessError):
            return False
        return any(o.get("id") == obj_id for o in found.get("objects", []))

    def close(self) -> None:
        self._collection.close()

    def __repr__(self) -> str:  # no credentials
        return f"TaxiiSink(name={self.name!r}, collection_url={self.collection_url!r})"
