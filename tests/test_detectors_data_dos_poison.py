"""dos_poison (Müller et al. 2021) on accuracy-degrading label flips of digits and ART's SVM poisoning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from kizashi.detectors import create
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC


def random_flip(y, fraction, seed=0):
    """Untargeted label flipping: a random ``fraction`` of samples get a random other label."""
    rng = np.random.default_rng(seed)
    n_classes = int(y.max()) + 1
    idx = np.sort(rng.choice(len(y), size=int(round(fraction * len(y))), replace=False))
    yp = y.copy()
    yp[idx] = (y[idx] + rng.integers(1, n_classes, size=len(idx))) % n_classes
    return yp, idx


def nearest_flip(X, y, fraction, target=0):
    """Targeted adversarial flip: the other-class samples closest to ``target``'s centre get its label."""
    other = np.flatnonzero(y != target)
    d = np.linalg.norm(X[other] - X[y == target].mean(axis=0), axis=1)
    idx = np.sort(other[np.argsort(d)[: int(round(fraction * len(y)))]])
    yp = y.copy()
    yp[idx] = target
    return yp, idx


def svm_poison(X, y, n_poison, classes=(1, 7), seed=0, max_iter=3):
    """ART PoisoningAttackSVM (Biggio et al. gradient ascent on a linear SVC) on a 2-class digits subset.
    Returns the poisoned training set (poisons appended), their indices and a held-out test split."""
    from art.attacks.poisoning import PoisoningAttackSVM
    from art.estimators.classification.scikitlearn import ScikitlearnSVC
    from sklearn.model_selection import train_test_split

    keep = np.isin(y, classes)
    Xb, yb = X[keep], (y[keep] == classes[1]).astype(int)
    Xtr, Xrest, ytr, yrest = train_test_split(Xb, yb, train_size=120, random_state=seed, stratify=yb)
    Xval, Xte, yval, yte = train_test_split(Xrest, yrest, train_size=40, random_state=seed, stratify=yrest)
    clf = ScikitlearnSVC(SVC(kernel="linear", probability=False), clip_values=(0.0, 1.0))
    clf.fit(Xtr, np.eye(2)[ytr])
    init = np.random.default_rng(seed).choice(len(ytr), size=n_poison, replace=False)
    attack = PoisoningAttackSVM(clf, step=0.1, eps=1.0, x_train=Xtr, y_train=np.eye(2)[ytr], x_val=Xval,
                                y_val=np.eye(2)[yval], max_iter=max_iter, verbose=False)
    Xp, yp = attack.poison(Xtr[init], y=np.eye(2)[1 - ytr[init]])
    X_all = np.vstack([Xtr, Xp])
    y_all = np.concatenate([ytr, yp.argmax(axis=1)])
    return X_all, y_all, np.arange(len(ytr), len(y_all)), Xte, yte


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
        Xp, yp, idx, _, _ = svm_poison(X, y, n_poison=n_poison, seed=seed, max_iter=max_iter)
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
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    yp, idx = random_flip(y, fraction, seed=seed)
    return X, y, yp, idx, create(name).inspect(X, yp)


@pytest.fixture(scope="module")
def flipped():
    return flipped_case("dos_poison")


@pytest.fixture(scope="module")
def digits(flipped):
    return flipped[0], flipped[1]


def test_random_flips_found_and_accuracy_regained(flipped):
    X, y, yp, idx, rep = flipped
    recall, clean_flagged = rates(rep, idx, len(y))
    assert recall >= 0.95 and clean_flagged < 0.03  # measured 1.00 and 0.013
    assert rep.suspicious and rep.target_class is None and rep.score > rep.threshold
    assert rep.scores.shape == (len(y),) and rep.scores[idx].mean() > 0.5 > np.median(rep.scores)
    poisoned_acc, cleaned_acc = accuracy_regained(X, y, yp, rep.flagged)
    assert cleaned_acc >= poisoned_acc + 0.02


def test_clean_digits_not_suspicious(digits):
    X, y = digits
    rep = check_clean("dos_poison", X, y, 0.02)
    assert rep.details["inconsistent_share"] > 0  # measured 0.012: ambiguous digits, below the verdict


def test_targeted_flip_reports_target_class(digits):
    X, y = digits
    rep, recall, clean_flagged = inspect_rates("dos_poison", X, *nearest_flip(X, y, 0.05, target=0))
    assert rep.suspicious and rep.target_class == 0
    assert recall >= 0.35 and clean_flagged < 0.03


def test_art_svm_poisoning_points_flagged(digits):
    X, y = digits
    rep, recall, clean_flagged = svm_case("dos_poison", X, y, n_poison=4)
    assert recall >= 0.8 and clean_flagged < 0.03
    assert rep.suspicious


def test_model_is_cloned_not_reused(flipped):
    X, y, yp, idx, _ = flipped
    sub = np.arange(600)
    fitted = KNeighborsClassifier(5).fit(X[sub], yp[sub])
    rep = create("dos_poison", n_repeats=1).inspect(X[sub], yp[sub], model=fitted)
    assert rep.details["estimator"] == "KNeighborsClassifier" and rep.suspicious
    assert rates(rep, idx[idx < 600], len(sub))[0] >= 0.9
    with pytest.raises(TypeError, match="scikit-learn estimator"):
        create("dos_poison").inspect(X, yp, model=object())


def test_deterministic_events_and_bad_input(flipped):
    X, y, yp, idx, rep = flipped
    again = create("dos_poison").inspect(X, yp)
    assert np.array_equal(rep.scores, again.scores) and np.array_equal(rep.flagged, again.flagged)
    assert rep.flagged.dtype.kind == "i" and np.all(np.diff(rep.flagged) > 0)
    det = create("dos_poison", n_repeats=2).set_context(model_id="digits", model_version="1")
    assert det.get_params() == {"n_folds": 5, "n_repeats": 2, "vote": 0.5, "max_clean_share": 0.02, "random_state": 0}
    ev = rep.to_events(det, dataset="digits-train")
    assert len(ev) == 1 and ev[0].stage == "precursor" and ev[0].attack == "poisoning"
    assert ev[0].detector.method == "muller2021-dos-poisoning" and ev[0].target.model == "digits"
    assert ev[0].evidence["n_flagged"] == len(rep.flagged) and ev[0].evidence["dataset"] == "digits-train"
    with pytest.raises(ValueError, match="one label per sample"):
        create("dos_poison").inspect(X, yp[:-1])
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        create("dos_poison").inspect(bad, yp)
    with pytest.raises(ValueError, match="two classes"):
        create("dos_poison").inspect(X[:20], np.zeros(20))
    with pytest.raises(ValueError, match="vote"):
        create("dos_poison", vote=1.5).inspect(X, yp)
