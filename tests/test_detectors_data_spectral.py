"""spectral_signature on a real BadNets poisoning (ART PoisoningAttackBackdoor) of digits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from kizashi.detectors import create
from kizashi.scenarios.poisoning import badnets
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier


def test_flags_poisons_and_target_class(poisoned):
    X, y, Xp, yp, idx, model, _ = poisoned
    rep = create("spectral_signature").inspect(Xp, yp, model=model)
    assert rep.suspicious and rep.target_class == 0
    caught = np.intersect1d(rep.flagged, idx)
    assert len(caught) / len(idx) >= 0.8
    false_flags = np.setdiff1d(rep.flagged, idx)
    assert len(false_flags) / (len(y) - len(idx)) < 0.05
    ev = rep.to_events(create("spectral_signature").set_context(model_id="digits", model_version="2"))
    assert len(ev) == 1 and ev[0].stage == "precursor" and ev[0].attack == "poisoning"
    assert ev[0].atlas.techniques == ["AML.T0020"] and ev[0].target.model == "digits"
    assert ev[0].evidence["target_class"] == 0


def test_clean_dataset_not_suspicious(poisoned):
    X, y, *_, clean_model = poisoned
    rep = create("spectral_signature").inspect(X, y, model=clean_model)
    assert not rep.suspicious and len(rep.flagged) == 0
    assert rep.to_events(create("spectral_signature")) == []


def test_deterministic_and_bad_input(poisoned):
    X, y, Xp, yp, idx, model, _ = poisoned
    a = create("spectral_signature").inspect(Xp, yp, model=model)
    b = create("spectral_signature").inspect(Xp, yp, model=model)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.flagged, b.flagged)
    with pytest.raises(ValueError, match="one label per sample"):
        create("spectral_signature").inspect(Xp, yp[:-1])
    bad = Xp.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        create("spectral_signature").inspect(bad, yp)


def test_activation_clustering_seeded_and_catches_badnets_cluster(poisoned):
    X, y, Xp, yp, idx, model, _ = poisoned
    a = create("activation_clustering").inspect(Xp, yp, model=model)
    b = create("activation_clustering").inspect(Xp, yp, model=model)
    assert np.array_equal(a.flagged, b.flagged)  # seeded, unlike ART's ActivationDefence
    caught = len(np.intersect1d(a.flagged, idx)) / len(idx)
    assert caught >= 0.7
    assert a.target_class is not None and a.details["classes_flagged"] >= 1
    ev = a.to_events(create("activation_clustering"))
    assert ev and ev[0].evidence["n_flagged"] == len(a.flagged)
    with pytest.raises(ValueError, match="hidden activations"):
        create("activation_clustering").inspect(Xp, yp)


def test_poison_majority_of_the_target_class():
    """10% BadNets on a 1069-sample split makes about half of class 0 poison: at the breakdown
    point the least outlying samples are the poisons, and the verdict reverses the score for that class."""
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_tr, _, y_tr, _ = train_test_split(X / 16.0, y, train_size=0.7, random_state=0, stratify=y)
    X_tr, y_tr = X_tr[188:], y_tr[188:]
    Xp, yp, idx = badnets(X_tr, y_tr, 0.10)
    assert np.mean(np.isin(np.flatnonzero(yp == 0), idx)) >= 0.45  # about half of class 0 is poison
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier((64,), max_iter=300, random_state=0).fit(Xp, yp)
    rep = create("spectral_signature").inspect(Xp, yp, model=model)
    assert rep.suspicious and rep.target_class == 0 and rep.details["poison_majority"]
    assert len(np.intersect1d(rep.flagged, idx)) / len(idx) >= 0.4
    assert len(np.setdiff1d(rep.flagged, idx)) / (len(yp) - len(idx)) < 0.08
