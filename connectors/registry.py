"""Every output by name: the formats of ``kizashi export`` and file sinks, and the sink types of the
sinks file (``type:``). The CLI, :mod:`~kizashi.connectors.config` and the sinks that take a format
(syslog, file) all build outputs here, so a name means the same thing everywhere.

Entries point at ``module:Class`` and are imported on first use: a sink's client library (httpx,
taxii2-client) is needed only when that sink is built. The names are contracts: add, never rename.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI reads the names at start-up: keep this module light
    from .base import Formatter, Sink


@dataclass(frozen=True, slots=True)
class Entry:
    """One named output: where its class lives and what it produces."""

    name: str
    target: str  # "module:attribute"
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)  # options unless given
    takes_ruleset: bool = False  # reads rule texts from the engine's RuleSet (STIX indicators)

    def load(self) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(import_module(module), attr)


def _table(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


#: Formatter name -> entry (``kizashi export <name>``, ``FileSink(format=<name>)``, syslog ``format``).
FORMATTERS: dict[str, Entry] = _table(
    Entry("stix", "kizashi.connectors.stix:StixFormatter", "STIX 2.1 bundle", defaults={"indent": 1},
          takes_ruleset=True),
    Entry("navigator", "kizashi.connectors.navigator:NavigatorFormatter", "ATLAS Navigator layer 4.3"),
    Entry("cef", "kizashi.connectors.syslog:CefFormatter", "ArcSight CEF, one line per alert"),
    Entry("leef", "kizashi.connectors.syslog:LeefFormatter", "IBM QRadar LEEF 2.0, one line per alert"),
    Entry("rfc5424", "kizashi.connectors.syslog:Rfc5424Formatter", "RFC 5424 syslog lines, alert in SD"),
    Entry("ecs", "kizashi.connectors.elastic:EcsFormatter", "Elastic Common Schema, NDJSON"),
    Entry("alerts", "kizashi.connectors.files:AlertsJsonFormatter", "kizashi alerts, JSON lines"),
)

#: Sink type -> entry (``type:`` in the sinks file).
SINKS: dict[str, Entry] = _table(
    Entry("webhook", "kizashi.connectors.webhook:WebhookSink", "JSON POST, HMAC-signed"),
    Entry("splunk_hec", "kizashi.connectors.splunk_hec:HecSink", "Splunk HTTP Event Collector"),
    Entry("elastic", "kizashi.connectors.elastic:ElasticBulkSink", "Elasticsearch _bulk, ECS"),
    Entry("syslog", "kizashi.connectors.syslog:SyslogSink", "syslog UDP/TCP/TLS, CEF/LEEF/RFC 5424"),
    Entry("stix_file", "kizashi.connectors.stix:StixFileSink", "one STIX bundle file per batch"),
    Entry("taxii", "kizashi.connectors.taxii:TaxiiSink", "TAXII 2.1 collection"),
    Entry("file", "kizashi.connectors.files:FileSink", "any format into one file"),
)


def _entry(table: dict[str, Entry], kind: str, name: str) -> Entry:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; one of {', '.join(table)}") from None


def formatter(name: str, *, ruleset: Any = None, **options: Any) -> Formatter:
    """A new formatter ``name`` with ``options`` over the entry's defaults; ``ruleset`` (the engine's
    ``RuleSet``) goes to the formatters that read rules and is ignored by the others. ``ValueError``
    for an unknown name or options the formatter does not take; ``ImportError`` when its library is
    not installed."""
    entry = _entry(FORMATTERS, "format", name)
    cls = entry.load()
    if entry.takes_ruleset and ruleset is not None:
        options = {"ruleset": ruleset, **options}
    try:
        return cls(**{**entry.defaults, **options})
    except TypeError as exc:
        raise ValueError(f"format {name}: {exc}") from None


def sink(type: str, *, name: str, **options: Any) -> Sink:
    """A new sink ``name`` of ``type`` with ``options``. ``ValueError`` for an unknown type or
    options the sink does not take; ``ImportError`` when its client library is not installed."""
    try:
        cls = _entry(SINKS, "type", type).load()
    except ValueError as exc:
        raise ValueError(f"sink {name}: {exc}") from None
    try:
        return cls(name=name, **options)
    except TypeError as exc:
        raise ValueError(f"sink {name} ({type}): {exc}") from None
