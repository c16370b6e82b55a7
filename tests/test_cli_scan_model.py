"""kizashi scan-model --detector b3d on clean and backdoored digits MLPs saved with skops (and, trusted,
with pickle)."""

from __future__ import annotations

import json
import pickle

import numpy as np
from kizashi.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


def test_scan_model_flags_backdoored_only(tmp_path, backdoored_models):
    backdoored, clean, X_clean = backdoored_models
    np.savez(tmp_path / "clean.npz", X=X_clean)
    import skops.io as sio

    sio.dump(backdoored, tmp_path / "bd.skops")
    with open(tmp_path / "ok.pkl", "wb") as fh:
        pickle.dump(clean, fh)
    r = runner.invoke(app, ["scan-model", str(tmp_path / "bd.skops"), "--clean", str(tmp_path / "clean.npz"),
                            "--detector", "b3d", "--out", str(tmp_path / "bd.jsonl")])
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in (tmp_path / "bd.jsonl").read_text().splitlines() if line.strip()]
    assert len(events) == 1 and events[0]["stage"] == "precursor"
    assert events[0]["evidence"]["target_class"] == 0
    r = runner.invoke(app, ["scan-model", str(tmp_path / "ok.pkl"), "--clean", str(tmp_path / "clean.npz"),
                            "--detector", "b3d", "--out", str(tmp_path / "ok.jsonl")])
    assert r.exit_code == 2 and "--allow-pickle" in r.output  # refused, saying why and what to use
    r = runner.invoke(app, ["scan-model", str(tmp_path / "ok.pkl"), "--clean", str(tmp_path / "clean.npz"),
                            "--detector", "b3d", "--out", str(tmp_path / "ok.jsonl"), "--allow-pickle"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "ok.jsonl").exists() or not (tmp_path / "ok.jsonl").read_text().strip()


def test_scan_model_missing_file(tmp_path):
    np.savez(tmp_path / "clean.npz", X=np.zeros((3, 64)))
    r = runner.invoke(app, ["scan-model", str(tmp_path / "nope.pkl"), "--clean", str(tmp_path / "clean.npz"),
                            "--detector", "b3d"])
    assert r.exit_code != 0 and "no such model file" in r.output
