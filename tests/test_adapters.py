"""Third-party detector output → kizashi events: YAML field mapping over JSON/CSV, and ART detectors."""

from __future__ import annotations

import json
import warnings

import numpy as np
from helpers_mapping import MAPPING
from kizashi.cli.main import app
from kizashi.connectors.adapters import AdapterError, FieldMapping, from_art_detector, read_records
from kizashi.engine.store import Store
from typer.testing import CliRunner


def test_json_records_with_nested_paths_and_bad_ones():
    fm = FieldMapping.from_yaml(MAPPING)
    text = "\n".join([
        json.dumps({"request_id": "r1", "ts": 1795825800000, "user": {"name": "alice"}, "client_ip": "10.0.0.1",
                    "model": "digits", "adv_score": 0.97, "cutoff": 0.5, "region": "eu"}),
        '{"request_id": "r2", "ts": ',
        json.dumps({"request_id": "r3", "ts": "yesterday", "adv_score": 0.9}),
        json.dumps({"request_id": "r4", "ts": 1795825801000, "adv_score": 0.8, "client_ip": "not-an-ip"}),
    ])
    out = list(fm.convert(read_records(text, "jsonl")))
    ok = [x for x in out if not isinstance(x, AdapterError)]
    bad = [x for x in out if isinstance(x, AdapterError)]
    assert [e.id for e in ok] == ["r1"]
    e = ok[0]
    assert e.subject.account == "alice" and e.subject.source_ip == "10.0.0.1" and e.target.model == "digits"
    assert e.time.isoformat().startswith("2026-11-28T00:30") and e.severity == "high"
    assert e.detector.name == "vendor_guard" and e.atlas.techniques == ["AML.T0015"]
    assert e.evidence == {"region": "eu"}
    reasons = [str(b) for b in bad]
    assert "record 2: not valid JSON" in reasons[0]
    assert "record 3" in reasons[1] and "not a number" in reasons[1]
    assert "record 4" in reasons[2] and "source_ip" in reasons[2]


def test_csv_through_cli_quarantines_bad_rows(tmp_path):
    (tmp_path / "map.yaml").write_text(MAPPING)
    (tmp_path / "alarms.csv").write_text(
        "request_id,ts,user.name,client_ip,model,adv_score,cutoff\n"
        "a1,1795825800000,bob,10.0.0.2,digits,0.91,0.5\n"
        "a2,1795825860000,bob,10.0.0.2,digits,high,0.5\n"
        "a3,1795825920000,carol,10.0.0.3,digits,0.88,0.5,extra\n"
        "a4,1795825980000,dave,10.0.0.4,digits,0.77,0.5\n")
    db = f"sqlite:///{tmp_path / 'a.db'}"
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "alarms.csv"), "--mapping", str(tmp_path / "map.yaml"),
                                 "--format", "csv", "--db", db])
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["stored"] == 2 and s["quarantined"] == 2
    store = Store(db)
    assert sorted(e.id for e in store.iter_events()) == ["a1", "a4"]
    reasons = [q["reason"] for q in store.list_quarantine()]
    assert any("score" in x for x in reasons) and any("more cells" in x for x in reasons)


def test_mapping_errors():
    import pytest

    with pytest.raises(ValueError, match="needs 'detector' and 'fields'"):
        FieldMapping.from_yaml("fields: {}")
    with pytest.raises(ValueError, match="time_format"):
        FieldMapping.from_yaml("detector: {id: a, name: a}\nfields: {}\ntime_format: weekday")


def test_real_art_binary_input_detector():
    from art.defences.detector.evasion import BinaryInputDetector
    from art.estimators.classification.scikitlearn import ScikitlearnLogisticRegression
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, _ = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    noisy = np.clip(X[:300] + 0.3 * np.sign(rng.normal(size=(300, 64))), 0, 1)
    det = BinaryInputDetector(ScikitlearnLogisticRegression(LogisticRegression(max_iter=500), clip_values=(0, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.detector.fit(np.vstack([X[300:800], noisy[:150]]), np.eye(2)[np.r_[np.zeros(500, int), np.ones(150, int)]])
    batch = np.vstack([X[800:850], noisy[150:200]])
    result = det.detect(batch)
    events = from_art_detector(result, detector_name="binary_input_detector", account="mallory", model="digits")
    flagged = int(np.asarray(result[1]).sum())
    assert len(events) == flagged > 0
    idx = [e.evidence["input_index"] for e in events]
    assert sum(i >= 50 for i in idx) > sum(i < 50 for i in idx)  # mostly the perturbed half
    assert all(0.5 <= e.score <= 1.0 for e in events)
    assert events[0].detector.id == "art.binary_input_detector" and events[0].subject.account == "mallory"
    import pytest

    with pytest.raises(AdapterError, match="tuple"):
        from_art_detector(np.zeros(3), detector_name="x")
