"""top (transferability of perturbation, compared with k-NN-filtered distilled references) on
BadNets-backdoored vs clean digits MLPs.

Measured (defaults, threshold 2.2, X_clean = digits[1400:]): clean MLPs random_state 0/1/3 score
1.81/1.91/1.80; BadNets 5% -> 0 scores 3.28-4.41 and 10% -> 3 2.48-2.73, right target each time
(see the module docstring for the second split).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from kizashi.detectors import create
from kizashi.scenarios.poisoning import badnets
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits


def _mlp(X, y, seed=0):
    with warnings.catch_warnings(), threadpool_limits(1):  # multi-threaded BLAS is ~25x slower on these tiny MLPs
        warnings.simplefilter("ignore")
        return MLPClassifier((64,), max_iter=300, random_state=seed).fit(X, y)


@pytest.fixture(scope="module")
def models():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, y_tr, X_clean = X[:1400], y[:1400], X[1400:]
    bd5 = _mlp(*badnets(X_tr, y_tr, 0.05)[:2])
    bd_t3 = _mlp(*badnets(X_tr, y_tr, 0.10, target=3)[:2])
    return {"bd5": bd5, "bd_t3": bd_t3, "clean": _mlp(X_tr, y_tr, 0)}, X_clean


@pytest.mark.parametrize(("name", "target"), [("bd5", 0), ("bd_t3", 3)])
def test_backdoored_models_flagged_with_target(models, name, target):
    ms, X_clean = models
    det = create("top").set_context(model_id="digits")
    rep = det.inspect_model(ms[name], X_clean)
    assert rep.suspicious and rep.target_class == target and rep.score > rep.threshold
    assert rep.scores.shape == (10,) and int(np.argmax(rep.scores)) == target
    ev = rep.to_events(det)
    assert len(ev) == 1 and ev[0].stage == "precursor" and ev[0].evidence["target_class"] == target


def test_clean_model_not_flagged_and_deterministic(models):
    ms, X_clean = models
    rep = create("top").inspect_model(ms["clean"], X_clean)
    assert not rep.suspicious and rep.target_class is None and rep.score < rep.threshold
    assert rep.to_events(create("top")) == []
    again = create("top").inspect_model(ms["clean"], X_clean)
    np.testing.assert_array_equal(rep.scores, again.scores)


def test_bad_input(models):
    ms, X_clean = models
    assert create("top", eps=0.1).get_params()["eps"] == 0.1
    with pytest.raises(ValueError, match="needs the protected model"):
        create("top").inspect_model(None, X_clean)
    bad = X_clean.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        create("top").inspect_model(ms["clean"], bad)
    with pytest.raises(AttributeError):  # a model detector has no dataset inspection
        create("top").inspect(X_clean, np.zeros(len(X_clean)))
