"""`kizashi detectors fit` and `kizashi sensor` from the command line: artefacts written by the CLI load
in the sensor; misuse is one `error:` line and exit status 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers_mlserver import free_port
from kizashi.detectors.artefacts import load_fitted

KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(KIZASHI + list(args), capture_output=True, text=True, timeout=timeout)


def run_in_process(*args: str):
    """The same command in this process (the misuse cases: no interpreter start per case)."""
    from kizashi.cli.main import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def train_npz(tmp_path_factory):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    path = tmp_path_factory.mktemp("fit") / "train.npz"
    np.savez(path, X=X[:400] / 16.0, y=y[:400])
    return path


def test_detectors_fit_writes_a_safe_artefact_the_sensor_loads(tmp_path, train_npz):
    out = tmp_path / "fitted" / "knn"
    r = run("detectors", "fit", "stateful_knn", "--data", str(train_npz), "--param", "k=5",
            "--param", "calibration_streams=4", "--param", "calibration_length=150", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    det = load_fitted(out)
    assert det.k == 5 and det.threshold_ == pytest.approx(summary["threshold"])
    assert sorted(p.name for p in out.iterdir()) == ["arrays.npz", "detector.json"]
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text("models:\n  digits:\n    detectors:\n      - name: stateful_knn\n        fitted: fitted/knn\n")
    # the sensor accepts it (it then fails only on the port we hold)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        r = run("sensor", "--upstream", "http://127.0.0.1:9", "--config", str(cfg), "--db",
                f"sqlite:///{tmp_path / 'k.db'}", "--port", str(held.getsockname()[1]))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot listen on")


@pytest.mark.parametrize("args, message", [
    (["detectors", "fit", "no_such", "--data", "X", "--out", "o"], "unknown detector"),
    (["detectors", "fit", "blacklight", "--data", "missing.npz", "--out", "o"], "cannot read"),
    (["detectors", "fit", "spectral_signature", "--data", "TRAIN", "--out", "o"], "dataset detector"),
    (["detectors", "fit", "blacklight", "--data", "TRAIN", "--param", "nope=1", "--out", "o"], "nope"),
    (["detectors", "fit", "blacklight", "--data", "TRAIN", "--param", "novalue", "--out", "o"], "key=value"),
])
def test_detectors_fit_misuse_is_one_error_line(args, message, train_npz, tmp_path):
    args = [str(train_npz) if a == "TRAIN" else str(tmp_path / a) if a in ("o",) else a for a in args]
    r = run_in_process(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("config, message", [
    ("mode: enforce\n", "models"),
    ("models: {digits: {detectors: [{name: blacklight}]}}\n", "no `fitted:`"),
    ("models: {digits: {detectors: [{name: blacklight, fitted: nowhere}]}}\n", "detector.json"),
    ("mode: block\nmodels: {digits: {}}\n", "mode"),
    ("models: {digits: {}}\ntrusted_proxies: [not-a-net]\n", "not an IP network"),
    ("models: [\n", "not valid YAML"),
    ("!!python/object/apply:os.system [echo pwned]\n", "not valid YAML"),
])
def test_sensor_misuse_is_one_error_line(config, message, tmp_path):
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text(config)
    r = run_in_process("sensor", "--upstream", "http://127.0.0.1:9", "--config", str(cfg), "--port",
                       str(free_port()), "--db", f"sqlite:///{tmp_path / 'k.db'}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and message in r.stderr and "Traceback" not in r.stderr


def test_sensor_rejects_a_bad_upstream_and_port(tmp_path):
    cfg = tmp_path / "sensor.yaml"
    cfg.write_text("models: {digits: {}}\n")
    r = run_in_process("sensor", "--upstream", "ftp://x", "--config", str(cfg))
    assert r.returncode == 2 and "--upstream" in r.stderr
    r = run_in_process("sensor", "--upstream", "http://127.0.0.1:9", "--config", str(cfg), "--port", "70000")
    assert r.returncode == 2 and "--port" in r.stderr
