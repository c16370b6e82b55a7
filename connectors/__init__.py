"""Connectors: events in (files, stdin, HTTP, third-party adapters) and alerts out (STIX/TAXII,
syslog CEF/LEEF/RFC 5424, Splunk HEC, Elastic ECS, ATLAS Navigator, webhooks).

Connectors depend on the engine's event model, never on detectors.
"""
