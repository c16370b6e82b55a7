"""Every value modifier pySigma parses, against the SQLite backend on a fixed corpus where SQLite can
express it, and against hand-checked expectations where it cannot (keywords, placeholders, lists)."""

from __future__ import annotations

import base64
import re
import sqlite3
from datetime import timedelta

import pandas as pd
import pytest
import yaml
from kizashi.engine.sigma import RuleLoadError, RuleSet
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

COLUMNS = ["id", "time", "name", "cmd", "user", "ip"]


def b64(s: str, enc: str = "utf-8") -> str:
    return base64.b64encode(s.encode(enc)).decode()


CORPUS = [
    {"id": "e1", "time": "2026-01-01T10:05:00Z", "name": "abc", "cmd": "x abc y", "user": "alice", "ip": "10.1.2.3", "num": 3},
    {"id": "e2", "time": "2026-01-01T11:05:00Z", "name": "ABC", "cmd": b64("abc"), "user": None, "ip": "192.168.1.1", "num": 4},
    {"id": "e3", "time": "2026-01-02T10:59:00Z", "name": "x", "cmd": "run " + b64("zzabcqq"), "user": "bob", "ip": "2001:db8::1", "num": -1},
    {"id": "e4", "time": "2026-01-02T12:00:00Z", "name": "abc", "cmd": "tool /exec now", "user": "Alice", "ip": "11.0.0.1", "num": None},
    {"id": "e5", "time": "2026-01-03T10:00:00Z", "name": "A*b", "cmd": "pre " + b64("ab", "utf-16-le") + " post", "user": "", "ip": "10.255.0.9", "num": 0},
    {"id": "e6", "time": "2026-01-03T13:00:00Z", "name": "abc\nd", "cmd": "tool –exec", "user": "carol", "ip": "2001:db9::1", "num": 12},
    {"id": "e7", "time": "2026-01-03T14:00:00Z", "name": "a_c", "cmd": "A_C", "user": "abc", "ip": "", "num": 3},
    {"id": "e8", "time": "2025-12-29T09:05:00Z", "name": "ABC\nD", "cmd": "77u/YQBiAA== " + b64("ab", "utf-16-be"), "user": "dave", "ip": "10.0.0.1", "num": 7},
]

ITEMS = {
    "plain": {"name": "abc"},
    "wildcards": {"name": "a?c*"},
    "escaped_wildcard": {"name": "A\\*b"},
    "contains": {"cmd|contains": "abc"},
    "contains_all": {"cmd|contains|all": ["abc", "x"]},
    "startswith": {"cmd|startswith": "tool"},
    "endswith": {"cmd|endswith": "C"},
    "cased": {"name|cased": "abc"},
    "cased_wildcard": {"name|cased": "A*"},
    "re": {"name|re": "^a.c$"},
    "re_i": {"name|re|i": "^abc$"},
    "re_m": {"name|re|m": "^d$"},
    "re_s": {"name|re|s": "c.d"},
    "base64": {"cmd|base64": "abc"},
    "base64offset": {"cmd|base64offset|contains": "abc"},
    "wide_base64offset": {"cmd|wide|base64offset|contains": "ab"},
    "windash": {"cmd|windash|contains": "-exec"},
    "cidr4": {"ip|cidr": "10.0.0.0/8"},
    "cidr6": {"ip|cidr": "2001:db8::/32"},
    "exists": {"user|exists": True},
    "not_exists": {"user|exists": False},
    "null": {"user": None},
    "fieldref": {"name|fieldref": "cmd"},
    "fieldref_contains": {"cmd|fieldref|contains": "name"},
    "gt": {"num|gt": 3},
    "gte": {"num|gte": 3},
    "lt": {"num|lt": 3},
    "lte": {"num|lte": 0},
    "neq": {"num|neq": 3},
    "number": {"num": 3},
    "utf16_bom": {"cmd|utf16|base64|contains": "ab"},
    "utf16be": {"cmd|utf16be|base64offset|contains": "ab"},
    "re_long_flags": {"name|re|ignorecase|multiline|dotall": "^ABC.d$"},
    "neq_string": {"user|neq": "alice"},
    "hour": {"time|hour": 10},
    "minute": {"time|minute": 5},
    "month": {"time|month": 1},
    "year": {"time|year": 2026},
    "day": {"time|day": 3},
    "list_or": {"user": ["alice", "bob"]},
    "empty_string": {"user": ""},
}


def rule(detection: dict, condition: str = "sel") -> str:
    return yaml.safe_dump({"title": "t", "name": "t", "logsource": {"product": "x"},
                           "detection": {"sel": detection, "condition": condition}})


@pytest.fixture(scope="module")
def db():
    conn = sqlite3.connect(":memory:")
    conn.create_function("REGEXP", 2, lambda p, v: v is not None and re.search(p, str(v)) is not None)
    conn.execute("CREATE TABLE logs (" + ", ".join(f"`{c}` TEXT COLLATE NOCASE" for c in COLUMNS) + ", num INTEGER)")
    conn.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?)", [tuple(e[c] for c in [*COLUMNS, "num"]) for e in CORPUS])
    return conn


@pytest.mark.parametrize("name", sorted(ITEMS))
@pytest.mark.parametrize("negate", [False, True])
def test_modifier_matches_sqlite(db, name, negate):
    text = rule(ITEMS[name], "not sel" if negate else "sel")
    (sql,) = sqliteBackend().convert(SigmaCollection.from_yaml(text))
    oracle = {r[0] for r in db.execute(sql.replace("SELECT *", "SELECT id", 1))}
    rs = RuleSet.from_yaml(text)
    stream = rs.stream()
    mine = {r.event_ids[0] for e in CORPUS for r in stream.push(e)}
    assert mine == oracle, sql
    assert {r.event_ids[0] for r in rs.evaluate_batch(CORPUS)} == oracle
    if not negate:
        assert oracle or name in {"re_m"}, "corpus should exercise the modifier"


def test_week_is_the_iso_week():
    # deliberate difference: SQLite's strftime('%W') counts Monday-started weeks from 0
    rs = RuleSet.from_yaml(rule({"time|week": 1}))
    assert {r.event_ids[0] for r in rs.evaluate_batch(CORPUS)} == {"e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"}
    rs = RuleSet.from_yaml(rule({"time|week": 52}))
    assert {r.event_ids[0] for r in rs.evaluate_batch(CORPUS)} == set()


def test_keywords_match_any_field():
    rs = RuleSet.from_yaml(rule(["*exec*", "bob"]).replace("sel:\n", "sel:\n", 1))
    got = {r.event_ids[0] for r in rs.evaluate_batch(CORPUS)}
    assert got == {"e3", "e4", "e6"}


def test_list_valued_field_matches_any_element():
    events = [{"id": "1", "atlas": {"technique": ["AML.T0015", "AML.T0043"]}},
              {"id": "2", "atlas": {"technique": ["AML.T0040"]}}]
    rs = RuleSet.from_yaml(rule({"atlas.technique": "aml.t0043"}))
    assert [r.event_ids[0] for r in rs.evaluate_batch(events)] == ["1"]
    assert [r.event_ids[0] for e in events for r in rs.stream().push(e)] == ["1"]
    rs_not = RuleSet.from_yaml(rule({"atlas.technique|startswith": "AML.T004"}, "not sel"))
    assert [r.event_ids[0] for r in rs_not.evaluate_batch(events)] == []


def test_expand_placeholders_resolved_or_refused():
    text = rule({"user|expand": "%admins%"})
    with pytest.raises(RuleLoadError, match="placeholder"):
        RuleSet.from_yaml(text)
    rs = RuleSet.from_yaml(text, placeholders={"admins": ["alice", "carol"]})
    assert {r.event_ids[0] for r in rs.evaluate_batch(CORPUS)} == {"e1", "e4", "e6"}


def test_unsupported_correlation_refused_at_load():
    text = rule({"name": "abc"}) + "---\n" + yaml.safe_dump({
        "title": "c", "correlation": {"type": "temporal", "rules": ["t"], "group-by": ["user"],
                                       "timespan": "1h", "condition": "t"}})
    with pytest.raises(RuleLoadError, match="extended"):
        RuleSet.from_yaml(text)


def test_invalid_yaml_names_the_problem():
    with pytest.raises(RuleLoadError):
        RuleSet.from_yaml("title: x\ndetection: {sel: {a: 1}, condition: nope}\nlogsource: {product: x}\n")


def test_batch_accepts_dataframe_with_categoricals():
    frame = pd.DataFrame(CORPUS)
    frame["name"] = frame["name"].astype("category")
    rs = RuleSet.from_yaml(rule({"name": "abc", "num|gte": 3}))
    assert {r.event_ids[0] for r in rs.evaluate_batch(frame)} == {"e1", "e2"}  # case-insensitive


def test_out_of_order_within_lateness_equals_batch():
    base = rule({"name|startswith": "a"}).replace("name: t", "name: base")
    corr = yaml.safe_dump({"title": "c", "name": "c", "correlation": {
        "type": "event_count", "rules": ["base"], "group-by": ["num"], "timespan": "3d",
        "condition": {"gte": 2}}})
    rs = RuleSet.from_yaml(base + "---\n" + corr)
    shuffled = [CORPUS[i] for i in (3, 0, 6, 2, 5, 1, 4)]
    ev = rs.stream(lateness=timedelta(days=3))
    streamed = [r for e in shuffled for r in ev.push(e)] + ev.flush()
    batch = rs.evaluate_batch(shuffled)
    assert sorted(r.to_json() for r in streamed) == sorted(r.to_json() for r in batch)
    assert [r.group for r in batch if r.type == "correlation"] == [{"num": 3}]
