"""Property-based fuzzing (hypothesis) of the input paths and every output format, with hostile values
in every field an attacker controls. Records are generated in bulk (hypothesis draws pools of hostile
values and a seed; each example expands them into >1,000 records fed in big batches), so each path
sees well over 10,000 generated records per run while staying fast.

Invariants: each input record is stored exactly once or quarantined exactly once with a reason, no
exception escapes, and every output line parses back to the values it was rendered from."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from helpers_mapping import MAPPING
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kizashi.connectors.adapters import AdapterError, FieldMapping, read_records
from kizashi.connectors.alertview import views
from kizashi.connectors.http_ingest import IngestApp
from kizashi.connectors.registry import formatter
from kizashi.connectors.syslog import _CONTROL, alert_fields
from kizashi.engine.events import Alert, DetectionEvent, EventValidationError, RuleRef
from kizashi.engine.pipeline import Pipeline, TimeBounds
from kizashi.engine.store import Store

EXAMPLES = 10  # hypothesis examples per path
PER_EXAMPLE = 1_100  # records per example: 11,000 per path
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
BOUNDS = TimeBounds(clock=lambda: NOW)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

NASTY = ["\x00", "\u2028", "\u2029", "\x85", "\x1b[31m", "[/x]", "[link=https://e.example]s[/link]", "|", "=",
         "\\", '"', "]", "\t", "\r\n", "\n", "%n%s", "${jndi:ldap://x}", "<script>", "\u202e", "🚨", "攻撃者",
         " ", "", "a" * 300, "\ufeff", "\ud800", "\udfff"]
TIMES = ["2026-11-28T01:00:00Z", "2026-11-30T12:04:00+00:00", "2099-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
         "9999-12-31T23:00:00-05:00", "1969-12-31T23:59:59Z", "2026-11-28T01:00:00", "yesterday", 1795825800,
         None, "2026-02-30T00:00:00Z", "2026-11-28T10:00:00+14:00"]
SCORES = [0.5, -1e308, 1e308, float("nan"), float("inf"), "1.5", True, None, 2**70, {"x": 1}]


def hostile_text(with_surrogates: bool):
    chars = st.characters(codec=None, exclude_categories=() if with_surrogates else ("Cs",))
    return st.one_of(st.sampled_from([n for n in NASTY if with_surrogates or not re.search("[\ud800-\udfff]", n)]),
                     st.text(chars, max_size=40))


def pools(with_surrogates: bool):
    return st.fixed_dictionaries({
        "text": st.lists(hostile_text(with_surrogates), min_size=8, max_size=30),
        "seed": st.integers(0, 2**32 - 1),
    })


def deep(n: int) -> dict:
    d: object = 1
    for _ in range(n):
        d = {"k": d}
    return d  # type: ignore[return-value]


def raw_event(rng: random.Random, texts: list[str], i: int) -> dict:
    """A record as an attacker would send it: a valid event with one to three fields made hostile."""
    pick = rng.choice
    rec: dict = {"id": f"f{i}", "time": (NOW - timedelta(minutes=rng.randrange(10**5))).isoformat(),
                 "detector": {"id": "kizashi.prada", "name": "prada"}, "stage": "symptom",
                 "attack": "extraction", "atlas": {"techniques": ["AML.T0024.002"]},
                 "subject": {"account": pick(texts) or "a", "session": pick(texts)},
                 "target": {"model": pick(texts) or "m"}, "score": 1.0, "evidence": {pick(texts): pick(texts)}}
    for _ in range(rng.randrange(4)):
        what = rng.randrange(11)
        if what == 0:
            rec["id"] = f"f{i}:" + pick(texts)  # still unique per record
        elif what == 1:
            rec["time"] = pick(TIMES)
        elif what == 2:
            rec["score"] = pick(SCORES)
        elif what == 3:
            rec["stage"] = pick(texts)
        elif what == 4:
            rec["evidence"] = {"x": deep(rng.choice([3, 31, 33, 300]))}
        elif what == 5:
            rec["atlas"] = {"techniques": [pick(texts)]}
        elif what == 6:
            rec.pop(rng.choice(["detector", "stage", "score"]), None)
        elif what == 7:
            rec[pick(texts) or "extra"] = pick(texts)
        elif what == 8:
            rec["subject"]["source_ip"] = pick(texts)
        elif what == 9:
            rec["evidence"] = {"blob": pick(texts) * 500}
        elif "detector" in rec:
            rec["detector"]["name"] = pick(texts)
    return rec


def dumps(rng: random.Random, rec: dict) -> str:
    try:
        return json.dumps(rec, ensure_ascii=rng.random() < 0.5)
    except (ValueError, RecursionError):
        return json.dumps(str(rec))


def line_variants(rng: random.Random, texts: list[str], i: int) -> str:
    """A JSON line of a hostile record, or garbage (never blank, no raw line break)."""
    if rng.random() < 0.1:
        garbage = "x" + rng.choice(texts) + rng.choice(["{", "[" * 5000, '{"id": ', "\x00", "null", "[]", "1e999"])
        return garbage.replace("\n", " ").replace("\r", " ")
    return dumps(rng, raw_event(rng, texts, i))


def expected_outcome(line: str) -> tuple[str, str | None]:
    """The oracle: ('stored', id) for a record that validates within the time bounds, else ('quarantined', None)."""
    try:
        e = DetectionEvent.parse(json.loads(line))
    except (EventValidationError, ValueError, RecursionError):
        return "quarantined", None
    if BOUNDS.reject_reason(e.time, BOUNDS.ceiling()) is not None:
        return "quarantined", None
    return "stored", e.id


def assert_each_once(store: Store, expected: list[tuple[str, str | None]], result) -> None:
    want_stored = [eid for what, eid in expected if what == "stored"]
    assert len(set(want_stored)) == len(want_stored)  # ids are unique by construction
    n_quarantined = sum(1 for what, _ in expected if what == "quarantined")
    assert (result.stored, result.quarantined, result.duplicates) == (len(want_stored), n_quarantined, 0)
    stored_ids = [e.id for e in store.iter_events(order="seq")]
    assert sorted(stored_ids) == sorted(want_stored)
    rows = store.list_quarantine(limit=10**6)
    assert len(rows) == n_quarantined and all(r["reason"] for r in rows)


@pytest.fixture
def store(tmp_path):
    n = [0]

    def make() -> Store:
        n[0] += 1
        return Store(f"sqlite:///{tmp_path / f'fuzz-{n[0]}.db'}")
    return make


# -- input paths --------------------------------------------------------------------------------------
@FUZZ
@given(pool=pools(with_surrogates=True))
def test_fuzz_jsonl_file_each_record_stored_or_quarantined_once(pool, store, tmp_path_factory):
    rng = random.Random(pool["seed"])
    lines = [line_variants(rng, pool["text"], i) for i in range(PER_EXAMPLE)]
    path = tmp_path_factory.mktemp("jsonl") / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    with open(path, encoding="utf-8", errors="replace") as fh:  # as `kizashi ingest FILE` reads it
        as_read = [ln.rstrip("\n") for ln in fh]
    s = store()
    with open(path, encoding="utf-8", errors="replace") as fh:
        result = Pipeline(s, time_bounds=BOUNDS).ingest_lines(fh, source=str(path), batch_size=1000)
    assert len(as_read) == PER_EXAMPLE  # U+2028, U+0085 ... did not split a record
    assert_each_once(s, [expected_outcome(ln) for ln in as_read], result)


@FUZZ
@given(pool=pools(with_surrogates=True))
def test_fuzz_ndjson_over_http_each_record_stored_or_quarantined_once(pool, store):
    rng = random.Random(pool["seed"])
    lines = [line_variants(rng, pool["text"], i) for i in range(PER_EXAMPLE)]
    body = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    s = store()
    pipe = Pipeline(s, time_bounds=BOUNDS)
    server = IngestApp(lambda evs: pipe.ingest(evs, source="http").summary(),
                       lambda rejects: s.quarantine_many(rejects, source="http"))
    code, summary = server.process(body, "application/x-ndjson")
    as_received = body.decode("utf-8", errors="replace").split("\n")
    expected = [expected_outcome(ln) for ln in as_received]
    n_stored = sum(1 for what, _ in expected if what == "stored")
    assert summary["received"] == PER_EXAMPLE
    assert summary.get("stored", 0) == n_stored
    assert summary["rejected_count"] + summary.get("quarantined", 0) == PER_EXAMPLE - n_stored
    assert code in (200, 207, 422)
    assert s.count_events() == n_stored and s.count_quarantine() == PER_EXAMPLE - n_stored


@FUZZ
@given(pool=pools(with_surrogates=False))
def test_fuzz_csv_through_mapping_each_row_stored_or_quarantined_once(pool, store):
    rng = random.Random(pool["seed"])
    texts = pool["text"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["request_id", "ts", "user.name", "client_ip", "model", "adv_score", "cutoff", "note"])
    for i in range(PER_EXAMPLE):
        ts = rng.choice([str(int((NOW - timedelta(minutes=rng.randrange(10**5))).timestamp() * 1000)),
                         "4102444800000", "-1", "1e30", rng.choice(texts)])
        w.writerow([f"r{i}", ts, rng.choice(texts), rng.choice(["10.0.0.1", "::1", rng.choice(texts)]),
                    rng.choice(texts), rng.choice(["0.9", "nan", "1e999", rng.choice(texts)]), "0.5",
                    rng.choice(texts) * rng.choice([1, 1, 20_000])])  # some cells over the csv field limit
    fm = FieldMapping.from_yaml(MAPPING)
    s = store()
    pipe = Pipeline(s, time_bounds=BOUNDS)
    records = read_records(buf.getvalue(), "csv")
    events, rejects = [], []
    for item in fm.convert(records):
        (rejects.append((item.raw, str(item))) if isinstance(item, AdapterError) else events.append(item))
    s.quarantine_many(rejects, source="csv")
    result = pipe.ingest(events, source="csv")
    assert len(records) == PER_EXAMPLE  # embedded line breaks stay inside their quoted cell
    assert result.stored + result.quarantined + len(rejects) == PER_EXAMPLE and result.duplicates == 0
    assert s.count_events() == result.stored
    assert s.count_quarantine() == result.quarantined + len(rejects)


# -- output formats -----------------------------------------------------------------------------------
def hostile_alerts(pool) -> tuple[list[Alert], dict[str, DetectionEvent]]:
    rng = random.Random(pool["seed"])
    texts = [t for t in pool["text"] if t.strip()] or ["x"]
    alerts, events = [], {}
    for i in range(PER_EXAMPLE):
        evs = []
        for j in range(rng.choice([1, 2])):
            e = DetectionEvent.parse({
                "id": f"o{i}-{j}-" + rng.choice(texts)[:50].replace("\x00", ""), "time": (NOW - timedelta(hours=i, minutes=j)).isoformat(),
                "detector": {"id": "kizashi.prada", "name": "prada"}, "stage": rng.choice(["precursor", "symptom"]),
                "attack": rng.choice(["evasion", "extraction"]), "atlas": {"techniques": ["AML.T0024.002"]},
                "subject": {"account": rng.choice(texts)[:200], "session": rng.choice(texts)[:200],
                            "source_ip": rng.choice(["10.0.0.1", "2001:db8::1", None])},
                "target": {"model": rng.choice(texts)[:200]}, "score": rng.random(),
                "evidence": {rng.choice(texts)[:30]: rng.choice(texts)}})
            evs.append(e)
            events[e.id] = e
        rule = RuleRef(id=f"r{i}-" + rng.choice(texts)[:100], title=rng.choice(texts)[:300], type="correlation",
                       correlation_type="temporal")
        alerts.append(Alert.from_events(rule=rule, events=evs, level=rng.choice(["low", "high", "critical"]),
                                        group={"account.id": evs[0].subject.account or ""}))
    return alerts, events


def sanitised(value: str, *, line_breaks: str | None = " ") -> str:
    s = value.translate(_CONTROL)
    return s.replace("\r", line_breaks).replace("\n", line_breaks) if line_breaks is not None else s


def unescape(s: str, table: dict[str, str]) -> str:
    return re.sub(r"\\(.)", lambda m: table.get(m.group(1), "\\" + m.group(1)), s)


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    header, start, i = [], 0, 0
    while len(header) < 7:  # seven header fields end at unescaped bars; the extension may hold bars
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == "|":
            header.append(unescape(line[start:i], {"\\": "\\", "|": "|"}))
            start = i + 1
        i += 1
    ext = line[start:]
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_.]+)=", ext))
    out = {}
    for a, b in zip(keys, keys[1:] + [None], strict=False):
        value = ext[a.end():b.start() if b else len(ext)]
        out[a.group(1)] = unescape(value, {"\\": "\\", "=": "=", "n": "\n", "r": "\r"})
    return header, out


@FUZZ
@given(pool=pools(with_surrogates=False))
def test_fuzz_every_output_format_parses_back_to_the_same_values(pool):
    alerts, events = hostile_alerts(pool)
    vs = views(alerts, events)
    fields = [alert_fields(v) for v in vs]

    # alerts JSON: one line per alert, the same alert back
    lines = formatter("alerts").render(alerts, events).split("\n")[:-1]
    assert [Alert.parse(ln) for ln in lines] == alerts

    # ECS: one JSON document per line, carrying the alert id and accounts
    lines = formatter("ecs").render(alerts, events).split("\n")[:-1]
    assert len(lines) == len(alerts)
    for a, ln in zip(alerts, lines, strict=True):
        doc = json.loads(ln)
        assert a.id in json.dumps(doc) and doc["rule"]["name"] is not None

    # CEF: header and extension fields back, control characters dropped, nothing injected
    lines = formatter("cef").render(alerts, events).split("\n")[:-1]
    assert len(lines) == len(alerts)
    for a, v, f, ln in zip(alerts, vs, fields, lines, strict=True):
        header, ext = parse_cef(ln)
        assert header[4] == sanitised(a.rule.id) and header[5] == sanitised(v.title)
        assert ext == {k: sanitised(val, line_breaks=None) for k, val in f.items() if val != ""}

    # LEEF: tab-delimited key=value, the same values (tabs and line breaks become spaces)
    lines = formatter("leef").render(alerts, events).split("\n")[:-1]
    assert len(lines) == len(alerts)
    for a, f, ln in zip(alerts, fields, lines, strict=True):
        body = ln.split("|x09|", 1)[1]
        attrs = dict(kv.split("=", 1) for kv in body.split("\t"))
        assert attrs["alertId"] == a.id and attrs["usrName"] == sanitised(f["suser"]).replace("\t", " ")
        assert attrs["group"] == sanitised(f["cs3"]).replace("\t", " ")

    # RFC 5424: structured-data params back through their escapes
    lines = formatter("rfc5424").render(alerts, events).split("\n")[:-1]
    assert len(lines) == len(alerts)
    for a, f, ln in zip(alerts, fields, lines, strict=True):
        sd = dict(re.findall(r' (\w+)="((?:[^"\\\]]|\\.)*)"', ln.split("] ", 1)[0]))
        back = {k: unescape(val, {'"': '"', "\\": "\\", "]": "]"}) for k, val in sd.items()}
        assert back["alertId"] == a.id and back["accounts"] == sanitised(f["suser"])
        assert back["rule"] == sanitised(f["cs4"])

    # STIX: one bundle; every alert's id and every account travel intact
    bundle = json.loads(formatter("stix").render(alerts, events))
    values = set(strings(bundle))
    assert bundle["type"] == "bundle" and all(a.id in values for a in alerts)
    assert all(acct in values for a in alerts for acct in a.accounts)

    # Navigator: every alert evidences AML.T0024.002, so its score is the number of alerts
    layer = json.loads(formatter("navigator").render(alerts, events))
    scores = {t["techniqueID"]: t.get("score") for t in layer["techniques"]}
    assert scores["AML.T0024.002"] == len(alerts)


def strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)


def test_fuzz_batch_through_the_ingest_process_on_stdin(tmp_path):
    """The same generator's records through a real ``kizashi ingest -`` process: it exits 0 and
    accounts for every line (stored + quarantined), however hostile the input."""
    import subprocess
    import sys

    rng = random.Random(14)
    texts = [n for n in NASTY if not re.search("[\ud800-\udfff]", n)] + ["x", "y"]
    lines = [line_variants(rng, texts, i) for i in range(3000)]
    db = f"sqlite:///{tmp_path / 'stdin.db'}"
    r = subprocess.run([sys.executable, "-m", "kizashi.cli.main", "ingest", "-", "--db", db],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["stored"] + summary["quarantined"] == len(lines) and summary["duplicates"] == 0
    s = Store(db)
    assert (s.count_events(), s.count_quarantine()) == (summary["stored"], summary["quarantined"])
