"""Safe model loading and the unsafe-artifact scan: a malicious pickle handed to ``scan-model``
runs nothing and produces an ``artifact_scan`` event; ONNX, safetensors, PyTorch weights and skops
load without running code; pickle/joblib are refused unless trusted, and scanned even then."""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest
from helpers_torch import digits_cnn, torch_cnn_model
from kizashi import detectors
from kizashi.cli.main import app
from kizashi.detectors.loading import UnsafeModelError, load_model
from kizashi.detectors.models import OnnxModel, TorchModel
from typer.testing import CliRunner

runner = CliRunner()


class _Payload:
    """Unpickling this calls os.system: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _events(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def cnn():
    from kizashi.scenarios.digits import load_digits01

    X, y = load_digits01()
    return torch_cnn_model(X[:1200], y[:1200]), X[1200:1300], y[1200:1300]


def test_malicious_pickle_runs_nothing_and_is_an_event(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "clean.npz").write_bytes(b"")
    np.savez(tmp_path / "clean.npz", X=np.zeros((4, 64)))
    for suffix, blob in ((".pkl", pickle.dumps(_Payload(marker))), (".pt", _torch_zip_with(_Payload(marker)))):
        path = tmp_path / f"vendor{suffix}"
        path.write_bytes(blob)
        for extra in ([], ["--allow-pickle"]):
            out = tmp_path / "out.jsonl"
            r = runner.invoke(app, ["scan-model", str(path), "--clean", str(tmp_path / "clean.npz"), "--out", str(out),
                                    *extra, *(["--architecture", "helpers_torch:digits_cnn"] if suffix == ".pt" else [])])
            assert r.exit_code == 2, r.output
            assert not marker.exists()
            ev = _events(out)
            assert len(ev) == 1 and ev[0]["detector"]["name"] == "artifact_scan"
            assert ev[0]["evidence"]["callable"] == "posix.system" and ev[0]["severity"] == "critical"
            assert ev[0]["atlas"]["techniques"] == ["AML.T0011.000", "AML.T0010.003"]
            assert ev[0]["target"]["endpoint"] == "model-registry"
        if suffix == ".pkl":
            assert "runs any callable" in r.output or "would run code" in r.output
    assert not marker.exists()


def _torch_zip_with(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "extra": obj}, buf)
    return buf.getvalue()


def test_pickle_refused_with_reason_and_trusted_pickle_loads(tmp_path, backdoored_models):
    _, clean, _ = backdoored_models
    path = tmp_path / "m.joblib"
    import joblib

    joblib.dump(clean, path)
    with pytest.raises(UnsafeModelError, match="pickle/joblib.*AML.T0011.000.*skops"):
        load_model(path)
    assert type(load_model(path, allow_pickle=True)).__name__ == "MLPClassifier"
    with pytest.raises(ValueError, match="unknown model format"):
        (tmp_path / "m.bin").write_bytes(b"xx")
        load_model(tmp_path / "m.bin")


def test_scan_clean_formats_find_nothing(tmp_path, cnn):
    model, _, _ = cnn
    from kizashi.scenarios.mnist import to_onnx
    from safetensors.torch import save_file

    scan = detectors.create("artifact_scan")
    save_file(model.module.state_dict(), tmp_path / "w.safetensors")
    import torch

    torch.save(model.module.state_dict(), tmp_path / "w.pt")
    blobs = {"w.safetensors": (tmp_path / "w.safetensors").read_bytes(), "w.pt": (tmp_path / "w.pt").read_bytes()}
    rep = {k: scan.inspect_model(v) for k, v in blobs.items()}
    assert rep["w.safetensors"].details["format"] == "safetensors" and not rep["w.safetensors"].suspicious
    assert rep["w.pt"].details["format"] == "pytorch-zip" and not rep["w.pt"].suspicious
    assert rep["w.pt"].to_events(scan) == []
    assert scan.inspect_model(to_onnx(_mnist_sized_net())).details["format"] == "onnx"


def _mnist_sized_net():
    from kizashi.scenarios.mnist import small_cnn

    return small_cnn(0)


def test_safe_formats_load_the_same_model(tmp_path, cnn):
    import torch
    from safetensors.torch import save_file

    model, X, _ = cnn
    save_file(model.module.state_dict(), tmp_path / "w.safetensors")
    torch.save(model.module.state_dict(), tmp_path / "w.pt")
    ref = model.predict_proba(X)
    for name in ("w.safetensors", "w.pt"):
        with pytest.raises(ValueError, match="name the architecture"):
            load_model(tmp_path / name)
        m = load_model(tmp_path / name, architecture="helpers_torch:digits_cnn", input_shape=(1, 8, 8))
        assert isinstance(m, TorchModel) and np.allclose(m.predict_proba(X), ref, atol=1e-6)
    torch.save(digits_cnn(), tmp_path / "full.pt")  # a whole pickled module: weights_only refuses it
    with pytest.raises(UnsafeModelError, match="weights_only=True"):
        load_model(tmp_path / "full.pt", architecture="helpers_torch:digits_cnn")
    buf = io.BytesIO()
    torch.onnx.export(model.module, torch.zeros(1, 1, 8, 8), buf, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    (tmp_path / "m.onnx").write_bytes(buf.getvalue())
    m = load_model(tmp_path / "m.onnx")
    assert isinstance(m, OnnxModel) and np.allclose(m.predict_proba(X), ref, atol=1e-5)
    assert "gradients" not in m.provides


def test_skops_needs_explicit_trust(tmp_path, backdoored_models):
    import skops.io as sio
    from sklearn.ensemble import GradientBoostingClassifier

    bd, _, X_clean = backdoored_models
    sio.dump(bd, tmp_path / "bd.skops")
    m = load_model(tmp_path / "bd.skops")
    assert np.array_equal(m.predict(X_clean), bd.predict(X_clean))
    gb = GradientBoostingClassifier(n_estimators=3).fit(X_clean[:60], np.arange(60) % 2)
    sio.dump(gb, tmp_path / "gb.skops")
    with pytest.raises(UnsafeModelError, match="not trusted: sklearn.tree._tree.Tree"):
        load_model(tmp_path / "gb.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "gb.skops")
    assert load_model(tmp_path / "gb.skops", trusted_types=untrusted).n_estimators == 3


def test_scan_model_cli_on_onnx_and_safetensors(tmp_path, cnn):
    """The 8x8 torch CNN through scan-model in both safe formats (artifact scan, then b3d)."""
    import torch
    from safetensors.torch import save_file

    model, X, _ = cnn
    np.savez(tmp_path / "clean.npz", X=X[:40])
    save_file(model.module.state_dict(), tmp_path / "w.safetensors")
    r = runner.invoke(app, ["scan-model", str(tmp_path / "w.safetensors"), "--clean", str(tmp_path / "clean.npz"),
                            "--detector", "artifact_scan"])
    assert r.exit_code == 0 and r.output.strip() == "", r.output
    r = runner.invoke(app, ["scan-model", str(tmp_path / "w.safetensors"), "--clean", str(tmp_path / "clean.npz")])
    assert r.exit_code == 2 and "name the architecture" in r.output
    buf = io.BytesIO()
    torch.onnx.export(model.module, torch.zeros(1, 1, 8, 8), buf, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    (tmp_path / "m.onnx").write_bytes(buf.getvalue())
    r = runner.invoke(app, ["scan-model", str(tmp_path / "m.onnx"), "--clean", str(tmp_path / "clean.npz"),
                            "--detector", "b3d", "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0, r.output
    assert all(e["detector"]["name"] == "b3d" for e in _events(tmp_path / "o.jsonl"))


def test_detectors_fit_loads_the_model_safely(tmp_path, backdoored_models):
    """``kizashi detectors fit --model``: pickle refused with the reason, skops loaded."""
    import skops.io as sio

    _, clean, X_clean = backdoored_models
    np.savez(tmp_path / "ref.npz", X=X_clean)
    with open(tmp_path / "m.pkl", "wb") as fh:
        pickle.dump(clean, fh)
    sio.dump(clean, tmp_path / "m.skops")
    args = ["detectors", "fit", "softmax_baseline", "--data", str(tmp_path / "ref.npz"), "--out", str(tmp_path / "d")]
    r = runner.invoke(app, [*args, "--model", str(tmp_path / "m.pkl")])
    assert r.exit_code == 2 and "pickle/joblib file" in r.output
    r = runner.invoke(app, [*args, "--model", str(tmp_path / "m.skops")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["threshold"] > 0
