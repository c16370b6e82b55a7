"""The task: scikit-learn's bundled 8x8 digits (nothing is downloaded), scaled to [0, 1], split into
the victim's training set, an optional defender's clean reference, a pool replayed by benign users and
the attacker's own pool; and the victim MLP trained on the first split."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

IMAGE_SHAPE = (8, 8)
N_FEATURES = 64
N_CLASSES = 10


def load_digits01() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, pixels scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def train_mlp(X: np.ndarray, y: np.ndarray, *, seed: int = 0, hidden: tuple[int, ...] = (64,),
              max_iter: int = 400) -> Any:
    """The victim: a scikit-learn ``MLPClassifier`` (ReLU hidden layers), seeded."""
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPClassifier(hidden, max_iter=max_iter, random_state=seed).fit(X, y)


@dataclass
class DigitsTask:
    """Digits split for a simulation and the victim model trained on the training split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_benign: np.ndarray  # held out: replayed by benign accounts
    y_benign: np.ndarray
    X_attack: np.ndarray  # held out: the attacker's own natural data and evasion targets
    y_attack: np.ndarray
    model: Any = None  # fitted victim
    X_ref: np.ndarray | None = None  # held out: the defender's clean reference (calibration)
    y_ref: np.ndarray | None = None


def digits_task(seed: int = 0, *, train_size: float = 0.5, reference_size: float | None = None,
                benign_size: float = 0.6, hidden: tuple[int, ...] = (64,), max_iter: int = 300) -> DigitsTask:
    """Split ``load_digits`` (stratified, seeded): ``train_size`` for the victim; of the rest,
    ``reference_size`` (if given) for the defender; of what remains ``benign_size`` for benign users
    and the remainder for the attacker. Trains the victim MLP on the training split."""
    from sklearn.model_selection import train_test_split

    X, y = load_digits01()
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=train_size, random_state=seed, stratify=y)
    X_ref = y_ref = None
    if reference_size is not None:
        X_ref, X_rest, y_ref, y_rest = train_test_split(X_rest, y_rest, train_size=reference_size,
                                                        random_state=seed, stratify=y_rest)
    X_b, X_a, y_b, y_a = train_test_split(X_rest, y_rest, train_size=benign_size, random_state=seed, stratify=y_rest)
    model = train_mlp(X_tr, y_tr, seed=seed, hidden=hidden, max_iter=max_iter)
    return DigitsTask(X_tr, y_tr, X_b, y_b, X_a, y_a, model, X_ref, y_ref)
