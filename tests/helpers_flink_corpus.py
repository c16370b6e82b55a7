"""One rule set and one event stream holding many independent differential cases, so a single Flink
job (about 15 s to start) checks them all: the bundled pack over its test cases and a campaign
stream, plus correlation and chained-correlation cases drawn (derandomised) from the same hypothesis
strategies as tests/test_sigma_differential.py, each renamed and fenced by a ``case`` field."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from helpers_campaigns import campaign_events
from helpers_sigma_cases import ALIASED, chained_strategy, corr_events_strategy, correlation_strategy
from hypothesis import HealthCheck, given, settings
from kizashi.rules import bundled_rules_path

CASES = Path(__file__).parent / "rules_cases"
SHIFT = timedelta(days=10)  # between bundled-pack cases: no window spans two cases


def draw(strategy, n: int) -> list:
    out: list = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def grab(x):
        out.append(x)

    grab()
    return out[:n]


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _parse(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def bundled_events() -> list[dict]:
    """The pack's test cases and the campaign stream, each moved to its own 10 days, ids prefixed."""
    streams = [[json.loads(line) for line in f.read_text().splitlines() if line.strip()]
               for f in sorted(CASES.glob("*.jsonl"))]
    streams.append([e.flat() for e in campaign_events()])
    out = []
    for k, events in enumerate(streams):
        for e in events:
            e = dict(e)
            e["id"] = f"b{k}-{e['id']}"
            e["time"] = _iso(_parse(e["time"]) + k * SHIFT)
            out.append(e)
    return out


def _rename(doc: dict, k: int) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["name"] = f"k{k}_{doc['name']}"
    corr = doc["correlation"]
    corr["rules"] = [f"k{k}_{r}" for r in corr["rules"]]
    for alias in (corr.get("aliases") or {}).values():
        for r in list(alias):
            alias[f"k{k}_{r}"] = alias.pop(r)
    return doc


def _base_rules(k: int) -> list[dict]:
    return [{"title": f"{k} {n}", "name": f"k{k}_rule_{n}", "logsource": {"product": "kizashi"},
             "detection": {"sel": {"name" + mod: v}, "case": {"case": k}, "condition": "sel and case"}}
            for n, mod, v in (("a", "", "a"), ("b", "|startswith", "b"))]


def generated_cases(n_corr: int = 24, n_chained: int = 12, n_aliased: int = 4) -> tuple[list[dict], list[dict]]:
    """(rule documents, events) for the generated correlation cases."""
    corrs = draw(correlation_strategy(), n_corr)
    chains = draw(chained_strategy(), n_chained)
    streams = draw(corr_events_strategy(), n_corr + n_chained + n_aliased)
    aliased = [d for d in yaml.safe_load_all(ALIASED) if "correlation" in d]
    rules: list[dict] = []
    events: list[dict] = []
    specs = [[c] for c in corrs] + [list(p) for p in chains] + [aliased] * n_aliased
    for k, (docs, stream) in enumerate(zip(specs, streams, strict=True)):
        rules += _base_rules(k) + [_rename(d, k) for d in docs]
        for e in stream:
            e = dict(e, id=f"k{k}-{e['id']}", case=k)
            if docs is aliased:
                e["cmd"] = {"p": "u1", "P": "U1", "q": "u2", "r": "zz"}[e["cmd"]]
            events.append(e)
    return rules, events


def write_corpus(folder: Path) -> dict:
    """:func:`build_corpus` in a fresh interpreter, so the corpus is the same whatever the test session
    imported before: Hypothesis mixes constants found in the already-imported local modules into its
    draws, so drawing in-process gave one corpus to ``pytest tests/test_flink.py`` and another to the
    whole suite (a CI failure could not be replayed on its own)."""
    proc = subprocess.run([sys.executable, "-m", "helpers_flink_corpus", str(folder)], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: Path(v) if k != "n_events" else v for k, v in json.loads(proc.stdout).items()}


def build_corpus(folder: Path) -> dict:
    """Rules folder, time-sorted events and the same events shuffled within 200 s (for lateness)."""
    rules_dir = folder / "rules"
    shutil.copytree(bundled_rules_path(), rules_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    docs, generated = generated_cases()
    (rules_dir / "generated.yml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    events = bundled_events() + generated
    events.sort(key=lambda e: (_parse(e["time"]), e["id"]))
    # no usable time (detection results only, as in the single process) and no id (a content hash)
    # the probe matches kizashi_evasion_precursor_probing, which no correlation uses: it reports its
    # matches (the pack's correlations do not `generate` their base rules' matches)
    first = next(e for e in events if e.get("stage") == "precursor" and e.get("attack") == "evasion")
    probe = {k: v for k, v in first.items() if k not in ("id", "time")}
    events += [dict(probe, id="untimed-1"), dict(probe, id="untimed-2", time="yesterday"),
               dict(probe, time=events[-1]["time"])]
    ordered = folder / "events.jsonl"
    ordered.write_text("".join(json.dumps(e) + "\n" for e in events))
    rng = random.Random(7)  # bounded disorder: sort by time plus a random delay below the lateness
    late = sorted(events[:-3], key=lambda e: _parse(e["time"]).timestamp() + rng.uniform(0, 200))
    late[len(late) // 2:len(late) // 2] = events[-3:-1]
    late.append(events[-1])
    shuffled = folder / "events_shuffled.jsonl"
    shuffled.write_text("".join(json.dumps(e) + "\n" for e in late))
    return {"rules": rules_dir, "events": ordered, "shuffled": shuffled, "n_events": len(events)}


if __name__ == "__main__":
    built = build_corpus(Path(sys.argv[1]))
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in built.items()}))
