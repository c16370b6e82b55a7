"""docs/fields.md names every flat field kizashi emits."""

from __future__ import annotations

import re

from conftest import ROOT
from kizashi.engine.events import EVENT_FIELD_MAP, flatten_alert


def documented() -> set[str]:
    text = (ROOT / "docs" / "fields.md").read_text(encoding="utf-8")
    names = set()
    for cell in re.findall(r"^\| `([^`]+)`(?: / `([^`]+)`)? \|", text, flags=re.M):
        names.update(c for c in cell if c)
    return names


def test_every_event_field_documented():
    missing = set(EVENT_FIELD_MAP) - documented()
    assert not missing, f"undocumented event fields: {sorted(missing)}"


def test_every_alert_field_documented():
    from helpers_events import make
    from kizashi.engine import Alert, DetectionEvent, RuleRef

    e = DetectionEvent.parse(make())
    a = Alert.from_events(rule=RuleRef(id="r"), events=[e], group={"account.id": "x"})
    docs = documented()
    missing = {k for k in flatten_alert(a) if k not in docs and not k.startswith("group.")}
    assert not missing, f"undocumented alert fields: {sorted(missing)}"
