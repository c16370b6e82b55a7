"""depois on real poisonings of digits: BadNets (ART PoisoningAttackBackdoor) and random label flipping.

The mimic model is fitted once on a trusted 15% of the clean data (stratified, seed 0). Measured with
the defaults: BadNets 5% recall 0.99, 10% recall 0.99, label flipping 10% recall 0.98, about 2.2% of
clean samples past the boundary; clean set not suspicious (largest z 2.5 vs suspicion_z 6).
"""

from __future__ import annotations

import numpy as np
import pytest
from kizashi.detectors import create
from kizashi.detectors.base import NotFittedError
from kizashi.scenarios.poisoning import badnets
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    _, trusted = train_test_split(np.arange(len(X)), test_size=0.15, stratify=y, random_state=0)
    det = create("depois").fit(X[trusted], y[trusted])
    return X, y, trusted, det


def _rates(rep, idx, n):
    caught = len(np.intersect1d(rep.flagged, idx))
    return caught / len(idx), len(np.setdiff1d(rep.flagged, idx)) / (n - len(idx))


@pytest.mark.parametrize("fraction, min_recall", [(0.05, 0.9), (0.10, 0.9)])
def test_badnets_flagged_with_target_class(digits, fraction, min_recall):
    X, y, _, det = digits
    Xp, yp, idx = badnets(X, y, fraction)
    rep = det.inspect(Xp, yp)
    assert rep.suspicious and rep.target_class == 0
    recall, clean_flagged = _rates(rep, idx, len(y))
    assert recall >= min_recall  # measured 0.99
    assert clean_flagged < 0.05  # measured 0.022
    assert rep.score > 3 * rep.threshold  # per-label z 19.8 / 25.7 vs 6
    assert list(rep.flagged) == sorted(rep.flagged)


def test_badnets_events(digits):
    X, y, _, det = digits
    Xp, yp, idx = badnets(X, y, 0.05)
    d = create("depois").set_context(model_id="digits", model_version="3")
    ev = det.inspect(Xp, yp).to_events(d, dataset="digits-train")
    assert len(ev) == 1 and ev[0].stage == "precursor" and ev[0].attack == "poisoning"
    assert ev[0].detector.method == "chen2021-depois" and ev[0].atlas.techniques == ["AML.T0020"]
    assert ev[0].target.model == "digits" and ev[0].evidence["target_class"] == 0
    assert ev[0].evidence["dataset"] == "digits-train" and ev[0].evidence["n_flagged"] >= len(idx)
    assert ev[0].severity in ("high", "critical")  # z 19.8 vs 6


def test_label_flipping_suspicious_without_target(digits):
    X, y, _, det = digits
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(y), int(0.1 * len(y)), replace=False))
    yf = y.copy()
    yf[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10
    rep = det.inspect(X, yf)
    assert rep.suspicious and rep.target_class is None
    recall, clean_flagged = _rates(rep, idx, len(y))
    assert recall >= 0.9 and clean_flagged < 0.05  # measured 0.98, 0.02
    assert rep.details["z_overall"] > 8  # measured 11.7


def test_clean_dataset_not_suspicious(digits):
    X, y, _, det = digits
    rep = det.inspect(X, y)
    assert not rep.suspicious and rep.target_class is None and len(rep.flagged) == 0
    assert rep.score < 0.7 * rep.threshold  # measured 2.5 vs 6
    assert rep.details["n_below_boundary"] / len(y) < 0.05  # measured 0.022
    assert rep.to_events(create("depois")) == []


def test_deterministic_and_params(digits):
    X, y, trusted, det = digits
    Xp, yp, _ = badnets(X, y, 0.05)
    small = {"n_folds": 2, "max_iter": 60}  # a cheaper fit: determinism does not depend on the size
    one = create("depois", **small).fit(X[trusted], y[trusted])
    two = create("depois", **small).fit(X[trusted], y[trusted])
    a, b = one.inspect(Xp, yp), two.inspect(Xp, yp)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.flagged, b.flagged)
    assert a.details == b.details and a.suspicious == b.suspicious
    np.testing.assert_array_equal(det.inspect(Xp, yp).scores, det.inspect(Xp, yp).scores)
    assert create("depois", k=3.0).get_params()["k"] == 3.0
    assert det.get_params()["random_state"] == 0 and det.threshold_ < det.mu_


def test_bad_input(digits):
    X, y, trusted, det = digits
    with pytest.raises(NotFittedError):
        create("depois").inspect(X, y)
    with pytest.raises(ValueError, match="trusted"):
        create("depois").fit(X[trusted])
    with pytest.raises(ValueError, match="one label per sample"):
        det.inspect(X, y[:-1])
    with pytest.raises(ValueError, match="one label per sample"):
        create("depois").fit(X[trusted], y[trusted][:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        det.inspect(bad, y)
    with pytest.raises(ValueError, match="features"):
        det.inspect(X[:, :10], y)
    with pytest.raises(ValueError, match="do not occur in the trusted data"):
        det.inspect(X[:5], np.array([0, 1, 2, 3, 42]))
    with pytest.raises(ValueError, match="at least n_folds"):
        create("depois").fit(X[:30], y[:30])
    with pytest.raises(ValueError, match="at least two labels"):
        create("depois").fit(X[y == 1], y[y == 1])
