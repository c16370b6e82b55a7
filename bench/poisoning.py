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


def _art_classifier(model):
    """ART's scikit-learn wrapper with ``get_activations`` = the MLP's last hidden layer (no torch)."""
    from art.estimators.classification.scikitlearn import ScikitlearnClassifier
    from kizashi.detectors.models import as_model

    class MLPWithActivations(ScikitlearnClassifier):
        @property
        def layer_names(self):
            return ["hidden"]

        def get_activations(self, x, layer=None, batch_size=128, framework=False):
            return as_model(self.model).features(x)

    return MLPWithActivations(model, clip_values=(0, 1))


def art_defence(name, model, Xp, yp, rate):
    """Indices flagged by ART's ActivationDefence or SpectralSignatureDefense on the same data."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    clf, Y = _art_classifier(model), np.eye(10)[yp]
    if name == "art_activation_defence":
        _, is_clean = ActivationDefence(clf, Xp, Y).detect_poison(nb_clusters=2, reduce="PCA", nb_dims=10)
    else:
        _, is_clean = SpectralSignatureDefense(clf, Xp, Y, expected_pp_poison=max(rate, 0.01), batch_size=128,
                                               eps_multiplier=1.5).detect_poison()
    return np.flatnonzero(np.asarray(is_clean) == 0)


def poison_sim(rate=0.05, seed=0):
    """Demo helper: BadNets-poisoned digits, a backdoored and a clean MLP, and the best detectors' reports.

    Returns a dict with ``X, y, poisoned_idx, backdoored_model, clean_model, X_clean`` and reports
    ``spectre`` (data scan of the poisoned set) and ``b3d_backdoored`` / ``b3d_clean`` (model scans).
    Takes about 10 s on one core.
    """
    from kizashi.detectors import create
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, y_tr, X_clean = X[:1400], y[:1400], X[1400:]
    Xp, yp, idx, _ = badnets(X_tr, y_tr, rate, seed=seed)
    bd, clean = train(Xp, yp, seed), train(X_tr, y_tr, seed)
    return {"X": Xp, "y": yp, "poisoned_idx": idx, "backdoored_model": bd, "clean_model": clean, "X_clean": X_clean,
            "spectre": create("spectre").inspect(Xp, yp, model=bd),
            "b3d_backdoored": create("b3d").inspect_model(bd, X_clean),
            "b3d_clean": create("b3d").inspect_model(clean, X_clean)}


def main() -> None:
    from kizashi.detectors import create
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="0.01,0.05,0.1")
    ap.add_argument("--detectors", default="spectre,spectral_signature,activation_clustering,art_activation_defence,art_spectral_signature")
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
            t = time.perf_counter()
            if name.startswith("art_"):
                flagged_idx, target = art_defence(name, model, Xp, yp, rate), None
                suspicious = len(flagged_idx) > 0
            else:
                rep = create(name).inspect(Xp, yp, model=model)
                flagged_idx, target, suspicious = rep.flagged, rep.target_class, rep.suspicious
            secs = time.perf_counter() - t
            flagged = set(int(i) for i in flagged_idx)
            poisoned = set(int(i) for i in idx)
            keep = np.setdiff1d(np.arange(len(yp)), list(flagged))
            retrained = train(Xp[keep], yp[keep])
            out["results"].append({**base, "detector": name, "flagged": len(flagged),
                                   "recall": round(len(flagged & poisoned) / len(poisoned), 4),
                                   "precision": round(len(flagged & poisoned) / max(1, len(flagged)), 4),
                                   "clean_flagged_share": round(len(flagged - poisoned) / (len(yp) - len(poisoned)), 4),
                                   "target_class": target, "suspicious": suspicious,
                                   "clean_acc_after_removal": round(float(retrained.score(X_te, y_te)), 4),
                                   "backdoor_success_after_removal": round(float(np.mean(retrained.predict(trig) == 0)), 4),
                                   "seconds": round(secs, 3)})
    clean_model = train(X_tr, y_tr)
    for label, mdl in (("clean", clean_model), ("backdoored_5pct", train(*badnets(X_tr, y_tr, 0.05)[:2]))):
        t = time.perf_counter()
        rep = create("b3d").inspect_model(mdl, X_te)
        out.setdefault("model_scans", []).append({"model": label, "detector": "b3d", "suspicious": rep.suspicious,
                                                  "score": round(rep.score, 3), "threshold": rep.threshold,
                                                  "target_class": rep.target_class,
                                                  "seconds": round(time.perf_counter() - t, 3)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
