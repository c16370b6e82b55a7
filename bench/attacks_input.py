"""Real input attacks on scikit-learn digit classifiers with adversarial-robustness-toolbox (no torch).

Reusable by benches, tests and the demo (import this file from ``bench/`` or load it by path):

* :func:`load_digits01` - ``load_digits`` scaled to [0, 1] (8x8 images flattened to 64 features).
* :func:`art_classifier` - an ART classifier for a fitted estimator: ART's own
  ``ScikitlearnLogisticRegression`` / ``ScikitlearnSVC`` (both give gradients), and
  :class:`ArtSklearnMLP` for ``MLPClassifier`` (gradients back-propagated through ``coefs_`` by
  :class:`kizashi.detectors.models.SklearnModel`; ART has no gradient wrapper for scikit-learn MLPs).
* :func:`craft_evasion` - FGSM, PGD, Carlini-Wagner L2, DeepFool (white-box) and HopSkipJump
  (black-box, labels only) against one model.
* :func:`steal_proxy` / :func:`craft_transfer` - train a proxy on the victim's answers (model
  extraction), craft on the proxy, submit to the victim.
* :func:`add_trigger` / :func:`poison_badnets` / :func:`train_backdoored` - BadNets pixel-pattern
  backdoor with ART's ``PoisoningAttackBackdoor`` and ``add_pattern_bd``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from kizashi.detectors.models import SklearnModel

warnings.filterwarnings("ignore", message="PyTorch not found")

from art.estimators.classification.classifier import ClassGradientsMixin  # noqa: E402
from art.estimators.classification.scikitlearn import (  # noqa: E402
    ScikitlearnClassifier,
    ScikitlearnLogisticRegression,
    ScikitlearnSVC,
)
from art.estimators.estimator import LossGradientsMixin  # noqa: E402

__all__ = [
    "EVASION_ATTACKS",
    "ArtSklearnMLP",
    "add_trigger",
    "art_classifier",
    "craft_evasion",
    "craft_transfer",
    "load_digits01",
    "poison_badnets",
    "steal_proxy",
    "train_backdoored",
]

IMAGE_SHAPE = (8, 8)
EVASION_ATTACKS = ("fgsm", "pgd", "cw", "deepfool", "hopskipjump")


def load_digits01() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, pixels scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


class ArtSklearnMLP(ClassGradientsMixin, LossGradientsMixin, ScikitlearnClassifier):
    """ART classifier with gradients for a fitted scikit-learn ``MLPClassifier`` (or linear model).

    ``predict`` returns log-probabilities (logits up to a per-row constant) and ``class_gradient``
    their gradients, which is what DeepFool and Carlini-Wagner work with; ``loss_gradient`` is the
    cross-entropy gradient used by FGSM and PGD.
    """

    def __init__(self, model: Any, clip_values: tuple[float, float] | None = (0.0, 1.0)):
        super().__init__(model=model, clip_values=clip_values, use_logits=True)
        self._white_box = SklearnModel(model)

    def class_gradient(self, x: np.ndarray, label: int | list[int] | np.ndarray | None = None,
                       **kwargs: Any) -> np.ndarray:
        x2 = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if label is None:
            grads = [self._white_box.class_gradient(x2, k) for k in range(self.nb_classes)]
            out = np.stack(grads, axis=1)
        else:
            out = self._white_box.class_gradient(x2, label)[:, None, :]
        return out.reshape((len(x), out.shape[1]) + tuple(np.shape(x)[1:]))

    def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> np.ndarray:
        x2 = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        y = np.asarray(y)
        labels = y.argmax(axis=1) if y.ndim == 2 else y.astype(int)
        onehot = np.zeros((len(x2), self.nb_classes))
        onehot[np.arange(len(x2)), labels] = 1.0
        return self._white_box.loss_gradient(x2, onehot).reshape(np.shape(x))


def art_classifier(estimator: Any, clip_values: tuple[float, float] = (0.0, 1.0)) -> Any:
    """The ART classifier (with gradients when the model allows) for a fitted scikit-learn estimator."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    if isinstance(estimator, LogisticRegression):
        return ScikitlearnLogisticRegression(estimator, clip_values=clip_values)
    if isinstance(estimator, SVC | LinearSVC):
        return ScikitlearnSVC(estimator, clip_values=clip_values)
    if hasattr(estimator, "coefs_"):
        return ArtSklearnMLP(estimator, clip_values=clip_values)
    return ScikitlearnClassifier(estimator, clip_values=clip_values)  # black-box attacks only


def _make_attack(name: str, clf: Any, *, eps: float, seed: int, max_iter: int | None) -> Any:
    from art.attacks.evasion import (
        CarliniL2Method,
        DeepFool,
        FastGradientMethod,
        HopSkipJump,
        ProjectedGradientDescent,
    )

    if name == "fgsm":
        return FastGradientMethod(clf, eps=eps)
    if name == "pgd":
        return ProjectedGradientDescent(clf, eps=eps, eps_step=eps / 8, max_iter=max_iter or 40,
                                        random_eps=False, num_random_init=0, verbose=False)
    if name == "cw":
        return CarliniL2Method(clf, confidence=0.0, max_iter=max_iter or 20, binary_search_steps=5,
                               learning_rate=0.05, initial_const=1.0, verbose=False)
    if name == "deepfool":
        return DeepFool(clf, max_iter=max_iter or 50, epsilon=0.02, nb_grads=10, verbose=False)
    if name == "hopskipjump":
        return HopSkipJump(clf, norm=2, max_iter=max_iter or 10, max_eval=500, init_eval=50,
                           init_size=50, verbose=False)
    raise ValueError(f"unknown evasion attack {name!r}; choose one of {', '.join(EVASION_ATTACKS)}")


def craft_evasion(estimator: Any, X: np.ndarray, y: np.ndarray | None = None, *, attack: str = "pgd",
                  eps: float = 0.2, seed: int = 0, max_iter: int | None = None) -> np.ndarray:
    """Adversarial versions of ``X`` against ``estimator`` (untargeted) with ART's ``attack``.

    ``fgsm``/``pgd`` take an L-inf budget ``eps`` (pixels in [0, 1]); ``cw``/``deepfool`` find minimal
    L2 perturbations; ``hopskipjump`` only queries predicted labels (a black-box attack).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    clf = art_classifier(estimator)
    np.random.seed(seed)  # ART draws from numpy's global generator
    atk = _make_attack(attack, clf, eps=eps, seed=seed, max_iter=max_iter)
    if y is not None and attack in ("fgsm", "pgd"):
        onehot = np.eye(clf.nb_classes)[np.searchsorted(estimator.classes_, y)]
        return np.asarray(atk.generate(X, y=onehot), dtype=np.float64)
    return np.asarray(atk.generate(X), dtype=np.float64)


def steal_proxy(victim: Any, X_query: np.ndarray, proxy: Any = None) -> Any:
    """Model extraction: fit ``proxy`` (default a logistic regression) on the victim's predicted labels."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    proxy = clone(proxy) if proxy is not None else LogisticRegression(max_iter=2000, C=1.0)
    return proxy.fit(X_query, victim.predict(X_query))


def craft_transfer(victim: Any, X_query: np.ndarray, X: np.ndarray, *, proxy: Any = None, attack: str = "pgd",
                   eps: float = 0.25, seed: int = 0) -> tuple[np.ndarray, Any]:
    """Transfer attack: steal a proxy with ``X_query``, craft ``attack`` on it, return (X_adv, proxy)."""
    stolen = steal_proxy(victim, X_query, proxy)
    return craft_evasion(stolen, X, stolen.predict(X), attack=attack, eps=eps, seed=seed), stolen


def _pattern(image_shape: tuple[int, int], pixel_value: float) -> Callable[[np.ndarray], np.ndarray]:
    from art.attacks.poisoning.perturbations import add_pattern_bd

    def perturb(x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64)
        imgs = flat.reshape((-1,) + image_shape)
        return add_pattern_bd(imgs, distance=1, pixel_value=pixel_value).reshape(flat.shape)

    return perturb


def add_trigger(X: np.ndarray, *, image_shape: tuple[int, int] = IMAGE_SHAPE, pixel_value: float = 1.0) -> np.ndarray:
    """``X`` with ART's BadNets pixel pattern stamped in the bottom-right corner."""
    from art.attacks.poisoning import PoisoningAttackBackdoor

    X = np.asarray(X, dtype=np.float64)
    out, _ = PoisoningAttackBackdoor(_pattern(image_shape, pixel_value)).poison(X, y=np.zeros(len(X)),
                                                                                 broadcast=True)
    return np.asarray(out, dtype=np.float64)


def poison_badnets(X: np.ndarray, y: np.ndarray, *, target: int = 0, fraction: float = 0.1, seed: int = 0,
                   image_shape: tuple[int, int] = IMAGE_SHAPE, pixel_value: float = 1.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BadNets poisoning: stamp the trigger on ``fraction`` of the non-target samples and relabel them
    ``target``. Returns (X_poisoned, y_poisoned, indices of the poisoned rows)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    X = np.array(X, dtype=np.float64)
    y = np.array(y)
    candidates = np.flatnonzero(y != target)
    idx = np.sort(rng.choice(candidates, size=int(round(fraction * len(y))), replace=False))
    X[idx] = add_trigger(X[idx], image_shape=image_shape, pixel_value=pixel_value)
    y[idx] = target
    return X, y, idx


def train_backdoored(X: np.ndarray, y: np.ndarray, *, target: int = 0, fraction: float = 0.1, seed: int = 0,
                     estimator: Any = None) -> tuple[Any, np.ndarray]:
    """An MLP (or ``estimator``) trained on BadNets-poisoned digits; returns (model, poisoned indices)."""
    from sklearn.base import clone
    from sklearn.neural_network import MLPClassifier

    Xp, yp, idx = poison_badnets(X, y, target=target, fraction=fraction, seed=seed)
    est = clone(estimator) if estimator is not None else MLPClassifier((64,), max_iter=400, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xp, yp)
    return est, idx
