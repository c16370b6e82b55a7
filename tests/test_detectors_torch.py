"""Every input/output, dataset and model detector on a PyTorch model (:class:`TorchModel`), and one
detector of every kind through each adapter (TorchModel, ArtModel over ART's PyTorchClassifier,
OnnxModel from the exported file). Tiny seeded torch CNNs on 8x8 digits keep it to seconds;
adversarial examples are real ART FGSM through ``PyTorchClassifier``."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from helpers_torch import torch_cnn_model
from kizashi import detectors
from kizashi.detectors.models import ArtModel, OnnxModel, TorchModel, provides
from kizashi.scenarios.digits import load_digits01
from kizashi.scenarios.poisoning import add_trigger, badnets
from sklearn.metrics import roc_auc_score

INPUT = ["softmax_baseline", "magnet", "grosse_mmd", "gong_binary", "safetynet", "kd_bu", "introspection",
         "feature_squeezing", "bimodel_mismatch", "misa", "strip"]
DATASET_WITH_MODEL = ["activation_clustering", "dos_poison", "spectral_signature", "spectre"]


def _art(tm: TorchModel):
    import torch
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(tm.module, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                             clip_values=(0.0, 1.0))


def _onnx(tm: TorchModel) -> OnnxModel:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm.module, torch.zeros(1, 1, 8, 8), buf, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    import onnx

    relu = [n.output[0] for n in onnx.load_from_string(buf.getvalue()).graph.node if n.op_type == "Relu"][-1]
    return OnnxModel(buf.getvalue(), features_output=relu)  # an intermediate tensor, exposed by the adapter


@pytest.fixture(scope="module")
def task():
    from art.attacks.evasion import FastGradientMethod

    X, y = load_digits01()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    tr, fit, te = order[:900], order[900:1300], order[1300:1400]
    tm = torch_cnn_model(X[tr], y[tr])
    adv = FastGradientMethod(_art(tm), eps=0.2).generate(X[te].reshape(-1, 1, 8, 8).astype(np.float32))
    adv = adv.reshape(len(te), -1).astype(np.float64)
    ok = (tm.predict(X[te]) == y[te]) & (tm.predict(adv) != y[te])
    Xp, yp, idx = badnets(X[tr], y[tr], 0.05)
    bd = torch_cnn_model(Xp, yp, epochs=150)
    return {"X_fit": X[fit], "y_fit": y[fit], "X_te": X[te], "adv": adv[ok], "model": tm, "backdoored": bd,
            "Xp": Xp, "yp": yp, "poisoned": idx, "acc": float(np.mean(tm.predict(X[te]) == y[te]))}


def _auroc(det, clean, attacked):
    s = det.score(np.vstack([clean, attacked]))
    return roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(attacked))], s)


def test_torch_model_and_attack_are_real(task):
    assert task["acc"] > 0.9 and len(task["adv"]) >= 40
    assert provides(task["model"], "gradients") and provides(task["model"], "activations")


@pytest.mark.parametrize("name", INPUT)
def test_input_detector_on_torch_model(task, name):
    """Fitted from clean data and the model alone (supervised ones craft their own examples)."""
    params = {"craft_samples": 80} if name in ("gong_binary", "safetynet", "introspection") else {}
    det = detectors.create(name, **params).fit(task["X_fit"], task["y_fit"], model=task["model"])
    auc = _auroc(det, task["X_te"], task["adv"])
    if name in ("misa", "strip"):  # backdoor-trigger detectors: their attack is a triggered input
        det = detectors.create(name).fit(task["X_fit"], model=task["backdoored"])
        victims = task["X_te"][task["backdoored"].predict(task["X_te"]) != 0]
        trig = add_trigger(victims)
        trig = trig[task["backdoored"].predict(trig) == 0]
        auc = _auroc(det, task["X_te"], trig)
    assert auc > 0.6, f"{name}: AUROC {auc:.2f} on the torch CNN"


@pytest.mark.parametrize("name", DATASET_WITH_MODEL)
def test_dataset_detector_on_torch_model(task, name):
    if name == "dos_poison":  # it retrains the model on folds: scikit-learn estimators only, said clearly
        with pytest.raises(TypeError, match="pass a scikit-learn estimator, not TorchModel"):
            detectors.create(name).inspect(task["Xp"], task["yp"], model=task["backdoored"])
        return
    rep = detectors.create(name).inspect(task["Xp"], task["yp"], model=task["backdoored"])
    recall = np.isin(task["poisoned"], rep.flagged).mean()
    assert rep.subject == "samples" and len(rep.scores) == len(task["yp"])
    floor = 0.3 if name == "activation_clustering" else 0.6  # AC splits 7 classes here, the poisons among them
    assert rep.suspicious and recall > floor, f"{name}: recall {recall:.2f}"


@pytest.mark.parametrize("name", ["b3d", "top"])
def test_model_detector_on_torch_model(task, name):
    params = {"steps": 60, "n_references": 1, "n_samples": 60} if name == "b3d" else {"n_references": 1}
    clean = detectors.create(name, **params).inspect_model(task["model"], task["X_fit"][:200])
    bd = detectors.create(name, **params).inspect_model(task["backdoored"], task["X_fit"][:200])
    assert bd.score > clean.score


@pytest.mark.parametrize("adapter", ["torch", "art", "onnx"])
def test_every_kind_through_every_adapter(task, adapter):
    """A module, an ART classifier and an ONNX file give the same probabilities and run through an
    input, a stream, a dataset and a model detector; only the ONNX model lacks gradients."""
    tm = task["model"]
    m = {"torch": tm, "art": ArtModel(_art(tm)), "onnx": _onnx(tm)}[adapter]
    X = task["X_te"]
    assert np.allclose(m.predict_proba(X), tm.predict_proba(X), atol=1e-5)
    assert provides(m, "gradients") is (adapter != "onnx")
    if adapter != "art":  # the hidden layer: hooked in torch, an intermediate ONNX tensor
        assert np.allclose(m.features(X), tm.features(X), atol=1e-5)
    det = detectors.create("gong_binary", craft_samples=60).fit(task["X_fit"], model=m)
    assert det.crafted_["attack"].startswith("ART ProjectedGradientDescent" if adapter != "onnx" else "ART HopSkipJump")
    assert _auroc(det, X, task["adv"]) > 0.6
    stream = detectors.create("label_distribution").fit(task["X_fit"], model=m)
    assert stream.score_stream(X[:30], predictions=m.predict(X[:30])).shape == (30,)
    rep = detectors.create("spectral_signature").inspect(task["Xp"], task["yp"], model=m)
    assert len(rep.scores) == len(task["yp"])
    rep = detectors.create("b3d", steps=30, n_references=1, n_samples=40).inspect_model(m, task["X_fit"][:100])
    assert rep.details["optimiser"] == ("nes" if adapter == "onnx" else "exact")


def test_b3d_with_few_clean_images_per_class(task):
    """2 or 4 clean images per class: b3d works (issue 16; it used to fail on a class dropped
    before the reference models were built)."""
    y = task["y_fit"]
    for k in (2, 4):
        idx = np.concatenate([np.flatnonzero(y == c)[:k] for c in range(10)])
        rep = detectors.create("b3d", steps=30, n_references=1).inspect_model(task["backdoored"], task["X_fit"][idx])
        assert rep.details["classes_judged"] >= 2 and np.isfinite(rep.score)
    with pytest.raises(ValueError, match="at least two"):
        one = task["X_fit"][task["model"].predict(task["X_fit"]) == 3][:5]
        detectors.create("b3d", steps=5, n_references=1).inspect_model(task["model"], one)
