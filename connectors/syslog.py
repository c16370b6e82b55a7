"""CEF and LEEF 2.0 renderings of alerts (one line per alert), escaped exactly per format.

* ArcSight CEF (Common Event Format, rev. 25): ``CEF:0|Vendor|Product|Version|SignatureID|Name|
  Severity|Extension``. In header fields ``\\`` and ``|`` are escaped with a backslash; in extension
  values ``\\`` and ``=`` are escaped and newlines become ``\\n`` / ``\\r``. Custom string fields
  ``cs1..cs6`` carry labels in ``cs<n>Label``.
* IBM QRadar LEEF 2.0: ``LEEF:2.0|Vendor|Product|Version|EventID|<delimiter>|`` then ``key=value``
  pairs separated by the declared delimiter (tab here); the delimiter, newlines and carriage
  returns are removed from values (LEEF has no escape for them), ``|`` in header fields escaped.

ATLAS technique and tactic IDs travel in labelled custom fields (``cs1Label=atlasTechniques``,
``cs2Label=atlasTactics``), the group key in ``cs3``, the rule in ``cs4``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kizashi.engine.events import Alert, DetectionEvent

VENDOR = "kizashi"
PRODUCT = "kizashi"
VERSION = "0.1"
SEVERITY = {"informational": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
_CONTROL = {i: None for i in range(32) if i not in (9, 10, 13)}  # drop other C0 controls


def cef_header(value: str) -> str:
    value = str(value).translate(_CONTROL).replace("\r", " ").replace("\n", " ")
    return value.replace("\\", "\\\\").replace("|", "\\|")


def cef_value(value: object) -> str:
    s = str(value).translate(_CONTROL)
    return s.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def _ms(dt) -> int:
    return int(dt.timestamp() * 1000)


def alert_fields(alert: Alert, events: Mapping[str, DetectionEvent]) -> dict[str, str]:
    chain = [events[i] for i in alert.event_ids if i in events]
    ips = sorted({e.subject.source_ip for e in chain if e.subject.source_ip})
    return {
        "rt": str(_ms(alert.created)),
        "start": str(_ms(alert.first_seen)),
        "end": str(_ms(alert.last_seen)),
        "cnt": str(alert.count),
        "suser": ",".join(alert.accounts),
        **({"src": ips[0]} if ips else {}),
        "cs1Label": "atlasTechniques", "cs1": ",".join(alert.atlas.techniques),
        "cs2Label": "atlasTactics", "cs2": ",".join(alert.atlas.tactics),
        "cs3Label": "group", "cs3": ",".join(f"{k}={v}" for k, v in alert.group.items()),
        "cs4Label": "rule", "cs4": alert.rule.name or alert.rule.id,
        "cs5Label": "models", "cs5": ",".join(alert.models),
        "cs6Label": "stages", "cs6": ",".join(alert.stages),
        "externalId": alert.id,
        "msg": f"{alert.rule.title or alert.rule.name or alert.rule.id}: {alert.count} event(s), "
               f"attacks {','.join(alert.attacks)}",
    }


class CefFormatter:
    """Alerts → CEF lines."""

    name = "cef"

    def line(self, alert: Alert, events: Mapping[str, DetectionEvent]) -> str:
        head = "|".join(cef_header(x) for x in (VENDOR, PRODUCT, VERSION, alert.rule.id,
                                                  alert.rule.title or alert.rule.name or alert.rule.id))
        ext = " ".join(f"{k}={cef_value(v)}" for k, v in alert_fields(alert, events).items() if v != "")
        return f"CEF:0|{head}|{SEVERITY.get(alert.level, 5)}|{ext}"

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        return "".join(self.line(a, events) + "\n" for a in alerts)


class LeefFormatter:
    """Alerts → LEEF 2.0 lines (tab-delimited attributes)."""

    name = "leef"
    delimiter = "\t"

    def value(self, v: object) -> str:
        return str(v).translate(_CONTROL).replace(self.delimiter, " ").replace("\n", " ").replace("\r", " ")

    def line(self, alert: Alert, events: Mapping[str, DetectionEvent]) -> str:
        head = "|".join(cef_header(x) for x in (VENDOR, PRODUCT, VERSION, alert.rule.name or alert.rule.id))
        f = alert_fields(alert, events)
        attrs = {"devTime": f["end"], "devTimeFormat": "epoch-ms", "sev": str(SEVERITY.get(alert.level, 5)),
                 "cat": "ml-attack", "usrName": f["suser"], **({"src": f["src"]} if "src" in f else {}),
                 "atlasTechniques": f["cs1"], "atlasTactics": f["cs2"], "group": f["cs3"], "rule": f["cs4"],
                 "models": f["cs5"], "stages": f["cs6"], "alertId": alert.id, "msg": f["msg"]}
        body = self.delimiter.join(f"{k}={self.value(v)}" for k, v in attrs.items())
        return f"LEEF:2.0|{head}|x09|{body}"

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        return "".join(self.line(a, events) + "\n" for a in alerts)
