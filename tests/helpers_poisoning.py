"""Shared helpers of the data-poisoning detector tests: poisoned digits from ``kizashi.scenarios``,
a detector's recall and clean share on them, and the accuracy regained by removing what it flags."""

from __future__ import annotations

import warnings

import numpy as np
from kizashi.detectors import create
from kizashi.scenarios.digits import load_digits01
from kizashi.scenarios.poisoning import label_flip, svm_poison
from sklearn.neighbors import KNeighborsClassifier


def svm_split_poison(X, y, n_poison, classes=(1, 7), seed=0, max_iter=3):
    """ART PoisoningAttackSVM on a 2-class digits subset: 120 training points, 40 for the attacker's
    validation, the rest held out. Returns the poisoned training set (poisons appended), their
    indices and the held-out split."""
    from sklearn.model_selection import train_test_split

    keep = np.isin(y, classes)
    Xb, yb = X[keep], (y[keep] == classes[1]).astype(int)
    Xtr, Xrest, ytr, yrest = train_test_split(Xb, yb, train_size=120, random_state=seed, stratify=yb)
    Xval, Xte, yval, yte = train_test_split(Xrest, yrest, train_size=40, random_state=seed, stratify=yrest)
    return (*svm_poison(Xtr, ytr, Xval, yval, n_poison, seed=seed, max_iter=max_iter), Xte, yte)


def rates(rep, idx, n):
    recall = np.isin(idx, rep.flagged).mean()
    clean_flagged = np.setdiff1d(rep.flagged, idx).size / (n - len(idx))
    return recall, clean_flagged


def inspect_rates(name, X, yp, idx, **params):
    rep = create(name, **params).inspect(X, yp)
    return (rep, *rates(rep, idx, len(yp)))


def svm_case(name, X, y, n_poison, seed=0, max_iter=3, **params):
    """ART SVM poisoning, then ``name`` on the poisoned binary training set: (report, recall, clean share)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xp, yp, idx, _, _ = svm_split_poison(X, y, n_poison=n_poison, seed=seed, max_iter=max_iter)
    return inspect_rates(name, Xp, yp, idx, **params)


def accuracy_regained(X, y, yp, flagged):
    """1-NN (it follows every flipped label) trained on the poisoned 2/3 vs without the flagged samples,
    tested on the clean labels of the other third: (poisoned accuracy, cleaned accuracy)."""
    tr, te = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    keep = tr & ~np.isin(np.arange(len(y)), flagged)
    knn = KNeighborsClassifier(1)
    return knn.fit(X[tr], yp[tr]).score(X[te], y[te]), knn.fit(X[keep], yp[keep]).score(X[te], y[te])


def check_clean(name, X, y, max_share):
    rep = create(name).inspect(X, y)
    assert not rep.suspicious and len(rep.flagged) == 0
    assert rep.details["inconsistent_share"] < max_share
    assert rep.to_events(create(name)) == []
    return rep


def flipped_case(name, fraction=0.05, seed=0):
    """Digits (scaled /16) with a random label flip, and ``name``'s report on them."""
    X, y = load_digits01()
    yp, idx = label_flip(y, fraction, seed=seed)
    return X, y, yp, idx, create(name).inspect(X, yp)
