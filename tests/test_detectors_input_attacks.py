"""Model gradient helpers (``kizashi.detectors.models``) and the ART attack helpers of
``kizashi.scenarios`` that the input-detector bench and tests use."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from kizashi.detectors.models import SklearnModel, as_model, image_shape_for
from kizashi.scenarios.digits import load_digits01
from kizashi.scenarios.evasion import art_classifier, craft_evasion, craft_transfer
from kizashi.scenarios.poisoning import add_trigger, badnets
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    X, y = load_digits01()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier((32, 16), max_iter=200, random_state=0).fit(X[:900], y[:900])
        lr = LogisticRegression(max_iter=300).fit(X[:900], y[:900])
    return X, y, mlp, lr


def numeric_grad(f, x, eps=1e-5):
    g = np.zeros_like(x)
    for j in range(x.shape[1]):
        d = np.zeros_like(x)
        d[:, j] = eps
        g[:, j] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


@pytest.mark.parametrize("which", ["mlp", "lr", "tanh"])
def test_model_gradients_match_finite_differences(data, which):
    X, y, mlp, lr = data
    est = {"mlp": mlp, "lr": lr}.get(which)
    if which == "tanh":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = MLPClassifier((8,), activation="tanh", max_iter=50, random_state=0).fit(X[:300], y[:300])
    m = as_model(est)
    x, t = X[900:903], y[900:903]
    ce = numeric_grad(lambda z: -np.log(m.predict_proba(z)[np.arange(3), t]), x)
    assert np.allclose(m.loss_gradient(x, t), ce, atol=1e-6)
    lp = numeric_grad(lambda z: np.log(m.predict_proba(z)[:, 4]), x)
    assert np.allclose(m.class_gradient(x, 4), lp, atol=1e-6)


def test_model_helpers_shapes_and_errors(data):
    X, y, mlp, lr = data
    m = as_model(mlp)
    assert [h.shape[1] for h in m.hidden(X[:4])] == [32, 16] and m.features(X[:4]).shape == (4, 16)
    assert np.allclose(m.predict_proba(X[:4]), mlp.predict_proba(X[:4]))
    svc = as_model(SVC(kernel="rbf").fit(X[:300], y[:300]))
    assert svc.predict_proba(X[:2]).shape == (2, 10)  # softmax of decision_function
    with pytest.raises(TypeError, match="no input gradient for SVC"):
        svc.loss_gradient(X[:2], y[:2])
    assert image_shape_for(64) == (8, 8) and image_shape_for(12, (3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="does not hold"):
        image_shape_for(64, (4, 4))


def test_art_mlp_wrapper_class_gradient(data):
    X, _, mlp, _ = data
    clf = art_classifier(mlp, gradients=SklearnModel)
    assert type(clf).__name__ == "ArtSklearnMLP" and clf.nb_classes == 10
    x = X[900:902].astype(np.float32)
    g = clf.class_gradient(x)
    assert g.shape == (2, 10, 64)
    # ART computes predictions in float32: a coarser step and tolerance for the numeric gradient
    num = numeric_grad(lambda z: clf.predict(z)[:, 7].astype(np.float64), x.astype(np.float64), eps=1e-2)
    assert np.allclose(g[:, 7], num, rtol=2e-2, atol=2e-2)
    assert clf.class_gradient(x, label=[1, 2]).shape == (2, 1, 64)
    assert type(art_classifier(LogisticRegression())).__name__ == "ScikitlearnLogisticRegression"


def test_whitebox_blackbox_and_transfer_attacks(data):
    X, y, mlp, _ = data
    x, t = X[1000:1012], y[1000:1012]
    right = mlp.predict(x) == t
    cw = craft_evasion(mlp, x, attack="cw", max_iter=10, gradients=SklearnModel)
    assert (mlp.predict(cw)[right] != t[right]).mean() >= 0.7
    hsj = craft_evasion(mlp, x, attack="hopskipjump", max_iter=5, gradients=SklearnModel)
    assert (mlp.predict(hsj)[right] != t[right]).mean() >= 0.7
    adv, proxy = craft_transfer(mlp, X[:900], x, eps=0.25)
    assert isinstance(proxy, LogisticRegression)
    assert (mlp.predict(adv)[right] != t[right]).mean() >= 0.7  # crafted on the proxy, fools the MLP
    assert np.abs(adv - x).max() <= 0.25 + 1e-6
    with pytest.raises(ValueError, match="unknown evasion attack"):
        craft_evasion(mlp, x, attack="boundary")


def test_badnets_poisoning(data):
    X, y, _, _ = data
    Xp, yp, idx = badnets(X[:500], y[:500], 0.1, target=3, seed=1, distance=1)
    assert len(idx) == 50 and np.all(yp[idx] == 3) and np.all(y[:500][idx] != 3)
    untouched = np.setdiff1d(np.arange(500), idx)
    assert np.array_equal(Xp[untouched], X[:500][untouched]) and np.array_equal(yp[untouched], y[:500][untouched])
    changed = (Xp[idx] != X[:500][idx]).reshape(-1, 8, 8)
    assert not changed[:, :4, :].any() and not changed[:, :, :4].any()  # pattern sits in the corner
    trig = add_trigger(X[:3], distance=1).reshape(-1, 8, 8)
    assert np.all(trig[:, 6, 6] == 1.0)
    with pytest.raises(ValueError, match="fraction"):
        badnets(X, y, 1.5)
