"""``kizashi.connectors.splunk_hec``: the public import path of the HecSink (implemented in
:mod:`kizashi.connectors.http_sinks`, which holds every HTTP sink)."""

from kizashi.connectors.http_sinks import HecSink

__all__ = ["HecSink"]
