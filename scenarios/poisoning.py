"""Training-data poisoning with adversarial-robustness-toolbox: BadNets backdoors
(``PoisoningAttackBackdoor`` with ART's corner pattern or single pixel), label flipping (random and
nearest-to-target), and ``PoisoningAttackSVM`` (Biggio et al. 2012) on a binary linear SVC."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .art_setup import quiet_art
from .digits import IMAGE_SHAPE, train_mlp

BACKDOOR_TARGET = 0
TRIGGERS = ("pattern", "single")


def _perturbation(trigger: str, distance: int, pixel_value: float,
                  image_shape: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    from art.attacks.poisoning.perturbations import add_pattern_bd, add_single_bd

    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}; choose one of {', '.join(TRIGGERS)}")
    stamp = add_pattern_bd if trigger == "pattern" else add_single_bd

    def perturb(x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64)
        return stamp(flat.reshape((-1, *image_shape)), distance=distance, pixel_value=pixel_value).reshape(flat.shape)

    return perturb


def add_trigger(X: np.ndarray, *, trigger: str = "pattern", distance: int = 2, pixel_value: float = 1.0,
                image_shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """``X`` with ART's BadNets trigger (a 4-pixel corner pattern or one pixel, ``distance`` pixels
    from the bottom-right corner) stamped by ``PoisoningAttackBackdoor``."""
    quiet_art()
    from art.attacks.poisoning import PoisoningAttackBackdoor

    X = np.asarray(X, dtype=np.float64)
    attack = PoisoningAttackBackdoor(_perturbation(trigger, distance, pixel_value, image_shape))
    out, _ = attack.poison(X, y=np.zeros(len(X)), broadcast=True)
    return np.asarray(out, dtype=np.float64)


def badnets(X: np.ndarray, y: np.ndarray, fraction: float, *, target: int = BACKDOOR_TARGET, seed: int = 0,
            trigger: str = "pattern", distance: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BadNets poisoning (Gu et al. 2017): stamp the trigger on ``fraction`` of the samples, drawn from
    the other classes, and relabel them ``target``. Returns (X_poisoned, y_poisoned, sorted indices)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    Xp, yp = np.array(X, dtype=np.float64), np.array(y)
    idx = np.sort(rng.choice(np.flatnonzero(yp != target), size=max(1, int(fraction * len(yp))), replace=False))
    Xp[idx] = add_trigger(Xp[idx], trigger=trigger, distance=distance)
    yp[idx] = target
    return Xp, yp, idx


def train_backdoored(X: np.ndarray, y: np.ndarray, *, target: int = BACKDOOR_TARGET, fraction: float = 0.1,
                     seed: int = 0, estimator: Any = None, distance: int = 2) -> tuple[Any, np.ndarray]:
    """An MLP (or a clone of ``estimator``) trained on BadNets-poisoned data; returns (model, poisoned indices)."""
    from sklearn.base import clone

    Xp, yp, idx = badnets(X, y, fraction, target=target, seed=seed, distance=distance)
    if estimator is None:
        return train_mlp(Xp, yp, seed=seed), idx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clone(estimator).fit(Xp, yp), idx


def label_flip(y: np.ndarray, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Untargeted label flipping: a random ``fraction`` of samples get a random other label.
    Returns (y_poisoned, sorted indices)."""
    rng = np.random.default_rng(seed)
    n_classes = int(np.max(y)) + 1
    idx = np.sort(rng.choice(len(y), size=max(1, int(fraction * len(y))), replace=False))
    yp = np.array(y)
    yp[idx] = (yp[idx] + rng.integers(1, n_classes, size=len(idx))) % n_classes
    return yp, idx


def nearest_flip(X: np.ndarray, y: np.ndarray, fraction: float, *, target: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Targeted label flipping: the other-class samples closest to ``target``'s centre get its label."""
    other = np.flatnonzero(y != target)
    d = np.linalg.norm(X[other] - X[y == target].mean(axis=0), axis=1)
    idx = np.sort(other[np.argsort(d)[: int(round(fraction * len(y)))]])
    yp = np.array(y)
    yp[idx] = target
    return yp, idx


def svm_poison(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, n_poison: int, *,
               seed: int = 0, max_iter: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ART ``PoisoningAttackSVM`` on a linear SVC trained on binary (0/1) labels: ``n_poison`` training
    points, label-flipped, pushed up the loss on the attacker's validation set, then appended.
    Returns (X_poisoned, y_poisoned, indices of the poisons)."""
    quiet_art()
    from art.attacks.poisoning import PoisoningAttackSVM
    from art.estimators.classification.scikitlearn import ScikitlearnSVC
    from sklearn.svm import SVC

    start = np.random.default_rng(seed).choice(len(X_train), size=n_poison, replace=False)
    clf = ScikitlearnSVC(SVC(kernel="linear", C=1.0, probability=False, random_state=seed).fit(X_train, y_train),
                         clip_values=(0.0, 1.0))
    attack = PoisoningAttackSVM(clf, step=0.1, eps=1.0, x_train=X_train, y_train=np.eye(2)[y_train], x_val=X_val,
                                y_val=np.eye(2)[y_val], max_iter=max_iter, verbose=False)
    y_flip = 1 - y_train[start]
    X_poison, _ = attack.poison(X_train[start].copy(), y=np.eye(2)[y_flip])
    Xp, yp = np.vstack([X_train, X_poison]), np.concatenate([y_train, y_flip])
    return Xp, yp, np.arange(len(X_train), len(Xp))
