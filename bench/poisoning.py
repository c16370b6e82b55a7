"""Training-data poisoning bench: kizashi's data detectors on BadNets-poisoned digits (ART
``PoisoningAttackBackdoor`` with ``add_pattern_bd``) at several poison rates. Per detector and
rate: recall and precision of flagged samples, share of clean samples flagged, accuracy regained
after removing flagged samples (clean test accuracy and backdoor success of a model retrained
without them), target class found, seconds. Prints JSON.

    .venv/bin/python bench/poisoning.py [--rates 0.01,0.05,0.1] [--detectors spectral_signature,activation_clustering]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def badnets(X, y, rate, target=0, seed=0):
    from art.attacks.poisoning import PoisoningAttackBackdoor
    from art.attacks.poisoning.perturbations import add_pattern_bd

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(np.flatnonzero(y != target), size=max(1, int(rate * len(y))), replace=False))
    attack = PoisoningAttackBackdoor(lambda x: add_pattern_bd(x.reshape(-1, 8, 8), pixel_value=1.0).reshape(x.shape))
    Xp, yp = X.copy(), y.copy()
    Xp[idx], _ = attack.poison(X[idx], y=np.full(len(idx), target), broadcast=True)
    yp[idx] = target
    return Xp, yp, idx, attack


def train(X, y, seed=0):
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPClassifier((64,), max_iter=300, random_state=seed).fit(X, y)


def main() -> None:
    from kizashi.detectors import create
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="0.01,0.05,0.1")
    ap.add_argument("--detectors", default="spectral_signature,activation_clustering")
    args = ap.parse_args()
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, train_size=0.7, random_state=0, stratify=y)
    out = {"data": "sklearn load_digits, 70/30 split", "attack": "ART PoisoningAttackBackdoor(add_pattern_bd), target 0",
           "results": []}
    for rate in (float(r) for r in args.rates.split(",")):
        Xp, yp, idx, attack = badnets(X_tr, y_tr, rate)
        model = train(Xp, yp)
        trig, _ = attack.poison(X_te[y_te != 0], y=np.zeros((y_te != 0).sum(), int), broadcast=True)
        base = {"rate": rate, "poisoned": int(len(idx)), "clean_acc_poisoned_model": round(float(model.score(X_te, y_te)), 4),
                "backdoor_success_poisoned_model": round(float(np.mean(model.predict(trig) == 0)), 4)}
        for name in args.detectors.split(","):
            det = create(name)
            t = time.perf_counter()
            rep = det.inspect(Xp, yp, model=model)
            secs = time.perf_counter() - t
            flagged = set(int(i) for i in rep.flagged)
            poisoned = set(int(i) for i in idx)
            keep = np.setdiff1d(np.arange(len(yp)), list(flagged))
            retrained = train(Xp[keep], yp[keep])
            out["results"].append({**base, "detector": name, "flagged": len(flagged),
                                   "recall": round(len(flagged & poisoned) / len(poisoned), 4),
                                   "precision": round(len(flagged & poisoned) / max(1, len(flagged)), 4),
                                   "clean_flagged_share": round(len(flagged - poisoned) / (len(yp) - len(poisoned)), 4),
                                   "target_class": rep.target_class, "suspicious": rep.suspicious,
                                   "clean_acc_after_removal": round(float(retrained.score(X_te, y_te)), 4),
                                   "backdoor_success_after_removal": round(float(np.mean(retrained.predict(trig) == 0)), 4),
                                   "seconds": round(secs, 3)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
