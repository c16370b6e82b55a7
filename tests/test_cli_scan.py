"""`kizashi scan-data`, `scan-model`, `detectors list` on a real BadNets-poisoned digits file."""

from __future__ import annotations

import json
import pickle

import numpy as np
from kizashi.cli.main import app
from kizashi.engine.store import Store
from kizashi.scenarios.poisoning import badnets
from typer.testing import CliRunner

runner = CliRunner()


def test_detectors_list():
    r = runner.invoke(app, ["detectors", "list", "--format", "json"])
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert rows["prada"]["ref"] == 36 and rows["prada"]["kind"] == "stream"
    assert rows["feature_squeezing"]["kind"] == "input"
    assert rows["spectral_signature"]["kind"] == "dataset" and rows["b3d"]["kind"] == "model"
    assert rows["depois"]["needs"] == {"labels": "required", "trusted_data": "required"}
    assert rows["gong_binary"]["needs"]["adversarial_examples"] == "optional"  # crafts its own from the model
    assert rows["artifact_scan"]["kind"] == "model" and rows["artifact_scan"]["needs"] == {"model": "required"}


def test_scan_data_to_file_and_store(poisoned, tmp_path):
    X, y, Xp, yp, idx, model, _ = poisoned
    np.savez(tmp_path / "train.npz", X=Xp, y=yp)
    import skops.io as sio

    sio.dump(model, tmp_path / "m.skops")
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump(model, fh)
    out = tmp_path / "ev.jsonl"
    db = f"sqlite:///{tmp_path / 's.db'}"
    r = runner.invoke(app, ["scan-data", str(tmp_path / "train.npz"), "--detector", "spectral_signature",
                            "--model", str(tmp_path / "m.pkl"), "--model-id", "digits-v2"])
    assert r.exit_code == 2 and "pickle/joblib file" in r.output and "--allow-pickle" in r.output
    r = runner.invoke(app, ["scan-data", str(tmp_path / "train.npz"), "--detector", "spectral_signature",
                            "--model", str(tmp_path / "m.skops"), "--model-id", "digits-v2", "--out", str(out),
                            "--db", db])
    assert r.exit_code == 0, r.stderr
    [ev] = [json.loads(x) for x in out.read_text().splitlines()]
    assert ev["stage"] == "precursor" and ev["target"]["model"] == "digits-v2"
    assert ev["evidence"]["target_class"] == 0 and ev["evidence"]["dataset"] == "train.npz"
    assert Store(db).count_events() == 1


def test_scan_errors(tmp_path):
    np.savez(tmp_path / "nolabels.npz", X=np.zeros((5, 4)))
    r = runner.invoke(app, ["scan-data", str(tmp_path / "nolabels.npz")])
    assert r.exit_code == 2 and "no array 'y'" in r.stderr
    r = runner.invoke(app, ["scan-data", str(tmp_path / "nolabels.npz"), "--detector", "nope"])
    assert r.exit_code == 2 and "unknown detector" in r.stderr
    r = runner.invoke(app, ["scan-data", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "cannot read" in r.stderr


def test_scan_data_depois_learns_from_trusted_file(tmp_path):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    trusted, rest = order[:270], order[270:]  # 15% trusted, held out from the training set
    Xp, yp, idx = badnets(X[rest], y[rest], 0.05)
    np.savez(tmp_path / "train.npz", X=Xp, y=yp)
    np.savez(tmp_path / "trusted.npz", X=X[trusted], y=y[trusted])
    r = runner.invoke(app, ["scan-data", str(tmp_path / "train.npz"), "--detector", "depois"])
    assert r.exit_code == 2 and "--trusted" in r.stderr
    out = tmp_path / "ev.jsonl"
    r = runner.invoke(app, ["scan-data", str(tmp_path / "train.npz"), "--detector", "depois,srnn",
                            "--trusted", str(tmp_path / "trusted.npz"), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    summary = {s["detector"]: s for s in json.loads(r.stderr.strip().splitlines()[-1])}
    assert summary["depois"]["suspicious"] and summary["depois"]["target_class"] == 0
    events = [json.loads(x) for x in out.read_text().splitlines()]
    depois = [e for e in events if e["detector"]["name"] == "depois"]
    assert len(depois) == 1 and depois[0]["evidence"]["target_class"] == 0
    caught = set(depois[0]["evidence"]["flagged_indices"]) & {int(i) for i in idx}
    assert len(caught) >= 0.5 * min(len(idx), 200)
