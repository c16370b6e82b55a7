"""Connectors: events in (files, stdin, HTTP, third-party adapters) and alerts out (STIX/TAXII,
syslog CEF/LEEF/RFC 5424, Splunk HEC, Elastic ECS, ATLAS Navigator, webhooks).

Every output is named in :mod:`kizashi.connectors.registry` and reads alerts through
:mod:`kizashi.connectors.alertview`. Connectors import the engine and the mappings only, never the
detectors or the scenarios.
"""
