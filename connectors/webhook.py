"""``kizashi.connectors.webhook``: the public import path of the WebhookSink (implemented in
:mod:`kizashi.connectors.http_sinks`, which holds every HTTP sink)."""

from kizashi.connectors.http_sinks import WebhookSink

__all__ = ["WebhookSink"]
