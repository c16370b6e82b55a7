"""Sinks from one YAML file. Secrets come from environment variables (``${VAR}``), never from the
file itself and never logged (``repr`` of a sink shows no token).

```yaml
sinks:
  - {name: soc-webhook, type: webhook, url: "https://soc.example/hook", secret: "${HOOK_SECRET}"}
  - {name: splunk, type: splunk_hec, url: "https://splunk:8088", token: "${SPLUNK_HEC_TOKEN}", ack: true}
  - {name: elastic, type: elastic, url: "https://es:9200", index: kizashi-alerts, api_key: "${ES_API_KEY}"}
  - {name: siem-syslog, type: syslog, host: 127.0.0.1, port: 6514, protocol: tls, format: cef}
  - {name: stix-drop, type: stix_file, directory: /var/lib/kizashi/stix}
  - {name: cti, type: taxii, url: "https://taxii/api1/", collection: "…", user: kizashi, password: "${TAXII_PW}"}
  - {name: cef-log, type: file, path: /var/log/kizashi/alerts.cef, format: cef}
```

Types and formats are those of :mod:`kizashi.connectors.registry`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .base import Sink
from .registry import sink

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise ValueError(f"{where}: environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value


def build_sink(spec: dict[str, Any]) -> Sink:
    """One ``sinks:`` entry (``name``, ``type`` from :data:`~kizashi.connectors.registry.SINKS`, the
    sink's own options) → a sink, ``${VAR}`` expanded."""
    if not isinstance(spec, dict):
        raise ValueError(f"a sink is a mapping with name and type, not {type(spec).__name__} {str(spec)[:80]!r}")
    spec = dict(spec)
    name = spec.pop("name", None)
    kind = spec.pop("type", None)
    if not name or not kind:
        raise ValueError(f"a sink needs name and type: {sorted(spec)}")
    return sink(kind, name=name, **_expand(spec, f"sink {name}"))


def load_sinks(path: str | os.PathLike) -> list[Sink]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:  # syntax errors and !!python tags (safe_load refuses them)
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    specs = data.get("sinks") if isinstance(data, dict) else None
    if not isinstance(specs, list):
        raise ValueError(f"{path}: expected a top-level 'sinks:' list")
    sinks = [build_sink(s) for s in specs]
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: sink names must be unique: {names}")
    return sinks
