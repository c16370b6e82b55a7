"""Every bundled rule: parses, is tagged with valid ATLAS IDs, has a level and false positives, and
fires on its positive case and not on its negative case (tests/rules_cases/<name>.{pos,neg}.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kizashi.engine.events import DetectionEvent
from kizashi.engine.sigma import RuleSet, check_atlas_tags, results_to_alerts

CASES = Path(__file__).parent / "rules_cases"
PACK = RuleSet.bundled()
NAMES = sorted(info.name for info in PACK.info.values())


def load(path: Path) -> list[DetectionEvent]:
    return [DetectionEvent.parse(line) for line in path.read_text().splitlines() if line.strip()]


def fired(name: str, events: list[DetectionEvent]) -> list:
    # every detection rule's matches, whatever `generate` says (the pack's correlations do not
    # generate: the pipeline keeps their base rules' matches as risk observations)
    ev = PACK.observing().stream()
    results = [r for e in sorted(events, key=lambda e: e.time) for r in ev.push(e)] + ev.flush()
    return [r for r in results if r.rule_name == name]


def test_pack_has_detection_and_correlation_rules():
    assert len(PACK.detections) >= 7 and len(PACK.correlation_rules) >= 5


@pytest.mark.parametrize("name", NAMES)
def test_rule_metadata(name):
    rule = PACK.rule(name)
    tags = [f"{t.namespace}.{t.name}" for t in rule.tags]
    assert any(t.startswith("atlas.aml.t") for t in tags)
    assert check_atlas_tags(tags) == []
    assert rule.level is not None and rule.falsepositives
    assert name in PACK.rule_text(name) and "title:" in PACK.rule_text(str(rule.id))


@pytest.mark.parametrize("name", NAMES)
def test_positive_case_fires(name):
    events = load(CASES / f"{name}.pos.jsonl")
    hits = fired(name, events)
    assert len(hits) == 1, hits
    alerts = results_to_alerts(hits, {e.id: e for e in events})
    assert alerts[0].level == hits[0].level


@pytest.mark.parametrize("name", NAMES)
def test_negative_case_is_quiet(name):
    assert fired(name, load(CASES / f"{name}.neg.jsonl")) == []


def test_check_rejects_unknown_and_upper_case_tags():
    assert check_atlas_tags(["atlas.aml.t9999"]) and check_atlas_tags(["atlas.AML.T0015"])
    assert check_atlas_tags(["attack.t1059", "atlas.aml.t0043.002", "atlas.aml.ta0001"]) == []


def test_cases_are_kizashi_events():
    for path in CASES.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            assert json.loads(line)["detector"]["name"]


def test_sigma_cli_check_passes_offline():
    """Upstream ``sigma check`` (sigma-cli) accepts the pack; the MITRE-data validators (which
    would download) are excluded, and the atlas namespace is ours."""
    import os
    import subprocess
    import sys
    from pathlib import Path as P

    from kizashi.rules import bundled_rules_path

    sigma = P(sys.executable).with_name("sigma")
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    r = subprocess.run([str(sigma), "check", "-x", "attacktag", "-x", "d3_fendtag", "-x", "namespace_tag",
                        str(bundled_rules_path())], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors, 0 condition errors and 0 issues" in r.stdout
