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

from .alertview import AlertView, epoch_ms, iso_z, views
from .base import DeliveryError, RecordFormatter
from .registry import formatter

VENDOR = "kizashi"
PRODUCT = "kizashi"
VERSION = "0.1"
# drop C0 controls but newline and carriage return (escaped per format), DEL and C1 controls (U+0085
# NEL would split lines in many readers); a tab becomes a space (rsyslog rewrites it as #011), and so
# do the Unicode line and paragraph separators U+2028/U+2029 (line breaks to JavaScript and editors)
_CONTROL = {**{i: None for i in range(32) if i not in (10, 13)}, 9: " ", 0x7F: None,
            **{i: None for i in range(0x80, 0xA0)}, 0x2028: " ", 0x2029: " "}


def cef_header(value: str) -> str:
    value = str(value).translate(_CONTROL).replace("\r", " ").replace("\n", " ")
    return value.replace("\\", "\\\\").replace("|", "\\|")


def cef_value(value: object) -> str:
    s = str(value).translate(_CONTROL)
    return s.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def alert_fields(v: AlertView) -> dict[str, str]:
    """The CEF extension of an alert; LEEF and RFC 5424 reuse its values."""
    alert = v.alert
    return {
        "rt": str(epoch_ms(alert.created)),
        "start": str(epoch_ms(alert.first_seen)),
        "end": str(epoch_ms(alert.last_seen)),
        "cnt": str(alert.count),
        "suser": ",".join(alert.accounts),
        **({"src": v.source_ips[0]} if v.source_ips else {}),
        "cs1Label": "atlasTechniques", "cs1": ",".join(alert.atlas.techniques),
        "cs2Label": "atlasTactics", "cs2": ",".join(alert.atlas.tactics),
        "cs3Label": "group", "cs3": ",".join(f"{k}={val}" for k, val in alert.group.items()),
        "cs4Label": "rule", "cs4": v.rule_name,
        "cs5Label": "models", "cs5": ",".join(alert.models),
        "cs6Label": "stages", "cs6": ",".join(alert.stages),
        "externalId": alert.id,
        "msg": f"{v.title}: {alert.count} event(s), attacks {','.join(alert.attacks)}",
    }


class CefFormatter(RecordFormatter):
    """Alerts → CEF lines."""

    name = "cef"

    def record(self, v: AlertView) -> str:
        head = "|".join(cef_header(x) for x in (VENDOR, PRODUCT, VERSION, v.alert.rule.id, v.title))
        ext = " ".join(f"{k}={cef_value(val)}" for k, val in alert_fields(v).items() if val != "")
        return f"CEF:0|{head}|{v.severity.number}|{ext}"


class LeefFormatter(RecordFormatter):
    """Alerts → LEEF 2.0 lines (tab-delimited attributes)."""

    name = "leef"
    delimiter = "\t"

    def value(self, v: object) -> str:
        return str(v).translate(_CONTROL).replace(self.delimiter, " ").replace("\n", " ").replace("\r", " ")

    def record(self, v: AlertView) -> str:
        head = "|".join(cef_header(x) for x in (VENDOR, PRODUCT, VERSION, v.rule_name))
        f = alert_fields(v)
        attrs = {"devTime": f["end"], "devTimeFormat": "epoch-ms", "sev": str(v.severity.number),
                 "cat": "ml-attack", "usrName": f["suser"], **({"src": f["src"]} if "src" in f else {}),
                 "atlasTechniques": f["cs1"], "atlasTactics": f["cs2"], "group": f["cs3"], "rule": f["cs4"],
                 "models": f["cs5"], "stages": f["cs6"], "alertId": v.alert.id, "msg": f["msg"]}
        body = self.delimiter.join(f"{k}={self.value(val)}" for k, val in attrs.items())
        return f"LEEF:2.0|{head}|x09|{body}"


# -- RFC 5424 and transports ---------------------------------------------------------------------------

SD_ID = "kizashi@32473"  # enterprise number 32473 is reserved for documentation (RFC 5612)
FACILITY = 13  # log audit


def rfc5424_header(v: AlertView, msgid: str, *, hostname: str = "kizashi", app_name: str = "kizashi") -> str:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID`` for an alert, raised at ``created``."""
    return f"<{FACILITY * 8 + v.severity.syslog}>1 {iso_z(v.alert.created)} {hostname} {app_name} - {msgid}"


def sd_value(value: object) -> str:
    """RFC 5424 PARAM-VALUE: escape ``"``, ``\\`` and ``]``; no control characters."""
    s = str(value).translate(_CONTROL).replace("\r", " ").replace("\n", " ")
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


class Rfc5424Formatter(RecordFormatter):
    """Alerts → RFC 5424 lines with the alert in structured data (``[kizashi@32473 …]``)."""

    name = "rfc5424"

    def __init__(self, hostname: str = "kizashi", app_name: str = "kizashi"):
        self.hostname, self.app_name = hostname, app_name

    def record(self, v: AlertView) -> str:
        f = alert_fields(v)
        params = {"alertId": v.alert.id, "rule": f["cs4"], "level": v.alert.level, "atlasTechniques": f["cs1"],
                  "atlasTactics": f["cs2"], "accounts": f["suser"], "models": f["cs5"], "count": f["cnt"]}
        sd = "[" + SD_ID + "".join(f' {k}="{sd_value(val)}"' for k, val in params.items()) + "]"
        msg = f["msg"].translate(_CONTROL).replace("\n", " ").replace("\r", " ")
        return f"{rfc5424_header(v, 'ALERT', hostname=self.hostname, app_name=self.app_name)} {sd} {msg}"


#: The formats a syslog sink sends (names in :mod:`kizashi.connectors.registry`).
SYSLOG_FORMATS = ("cef", "leef", "rfc5424")


class SyslogSink:
    """Send one line per alert over UDP, TCP (newline framing, RFC 6587 non-transparent) or TLS.

    CEF and LEEF lines are wrapped in an RFC 5424 header so any syslog receiver parses them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 514, *, protocol: str = "udp", format: str = "cef",
                 cafile: str | None = None, verify: bool = True, timeout: float = 5.0, name: str = "syslog"):
        if protocol not in ("udp", "tcp", "tls"):
            raise ValueError(f"protocol must be udp, tcp or tls, not {protocol!r}")
        if format not in SYSLOG_FORMATS:
            raise ValueError(f"format must be one of {', '.join(SYSLOG_FORMATS)}, not {format!r}")
        self.host, self.port, self.protocol, self.format = host, int(port), protocol, format
        self.cafile, self.verify, self.timeout, self.name = cafile, verify, timeout, name
        self.formatter: RecordFormatter = formatter(format)

    def frames(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> list[bytes]:
        out = []
        for v in views(alerts, events):
            body = self.formatter.record(v)
            if self.format != "rfc5424":
                body = f"{rfc5424_header(v, self.format.upper())} - {body}"
            out.append(body.encode("utf-8"))
        return out

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        import socket
        import ssl

        frames = self.frames(alerts, events)
        if not frames:
            return
        try:
            if self.protocol == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    for f in frames:
                        s.sendto(f, (self.host, self.port))
                return
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.protocol == "tls":
                ctx = ssl.create_default_context(cafile=self.cafile)
                if not self.verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                raw = ctx.wrap_socket(raw, server_hostname=self.host)
            with raw:
                raw.sendall(b"".join(f + b"\n" for f in frames))
        except OSError as exc:
            raise DeliveryError(f"{self.name}: {self.protocol}://{self.host}:{self.port}: {exc}", retryable=True) from exc

    def close(self) -> None:
        pass
