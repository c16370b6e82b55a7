"""Evasion attacks with adversarial-robustness-toolbox on digit classifiers: white-box (FGSM, PGD,
Carlini-Wagner L2, DeepFool) and HopSkipJump on a model in hand, a transfer attack crafted on a
stolen proxy, and black-box attacks (HopSkipJump, BoundaryAttack, SignOPT, GeoDA, ZOO) sent through
the inference API under a query budget, with their random starts drawn from a seeded generator."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .api import InferenceAPI, QueryBudgetExceeded
from .art_setup import quiet_art
from .extraction import steal_proxy

WHITE_BOX_ATTACKS = ("fgsm", "pgd", "cw", "deepfool", "hopskipjump")
EVASION_ATTACKS = ("hopskipjump", "boundary", "signopt", "geoda", "zoo")  # black-box, through the API


def art_classifier(estimator: Any, clip_values: tuple[float, float] = (0.0, 1.0), *,
                   gradients: Callable[[Any], Any] | None = None) -> Any:
    """The ART classifier (with gradients when the model allows) for a fitted scikit-learn estimator.

    ART's own ``ScikitlearnLogisticRegression`` / ``ScikitlearnSVC`` give gradients; ART has none for
    ``MLPClassifier``, so for an MLP ``gradients(estimator)`` must give an object with
    ``class_gradient(X, k)`` and ``loss_gradient(X, onehot)`` (the caller passes one in, e.g.
    ``kizashi.detectors.models.SklearnModel``).
    """
    quiet_art()
    from art.estimators.classification.scikitlearn import (
        ScikitlearnClassifier,
        ScikitlearnLogisticRegression,
        ScikitlearnSVC,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    if isinstance(estimator, LogisticRegression):
        return ScikitlearnLogisticRegression(estimator, clip_values=clip_values)
    if isinstance(estimator, SVC | LinearSVC):
        return ScikitlearnSVC(estimator, clip_values=clip_values)
    if hasattr(estimator, "coefs_") and gradients is not None:
        return _art_mlp_class()(estimator, gradients(estimator), clip_values=clip_values)
    return ScikitlearnClassifier(estimator, clip_values=clip_values)  # black-box attacks only


def _art_mlp_class() -> type:
    from art.estimators.classification.classifier import ClassGradientsMixin
    from art.estimators.classification.scikitlearn import ScikitlearnClassifier
    from art.estimators.estimator import LossGradientsMixin

    class ArtSklearnMLP(ClassGradientsMixin, LossGradientsMixin, ScikitlearnClassifier):
        """ART classifier with gradients for a fitted scikit-learn ``MLPClassifier``.

        ``predict`` returns log-probabilities (logits up to a per-row constant) and ``class_gradient``
        their gradients, which is what DeepFool and Carlini-Wagner work with; ``loss_gradient`` is the
        cross-entropy gradient used by FGSM and PGD.
        """

        def __init__(self, model: Any, white_box: Any, clip_values: tuple[float, float] | None = (0.0, 1.0)):
            super().__init__(model=model, clip_values=clip_values, use_logits=True)
            self._white_box = white_box

        def class_gradient(self, x: np.ndarray, label: int | list[int] | np.ndarray | None = None,
                           **kwargs: Any) -> np.ndarray:
            x2 = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
            if label is None:
                out = np.stack([self._white_box.class_gradient(x2, k) for k in range(self.nb_classes)], axis=1)
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

    return ArtSklearnMLP


def _white_box_attack(name: str, clf: Any, *, eps: float, max_iter: int | None) -> Any:
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
    raise ValueError(f"unknown evasion attack {name!r}; choose one of {', '.join(WHITE_BOX_ATTACKS)}")


def craft_evasion(estimator: Any, X: np.ndarray, y: np.ndarray | None = None, *, attack: str = "pgd",
                  eps: float = 0.2, seed: int = 0, max_iter: int | None = None,
                  gradients: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Adversarial versions of ``X`` against ``estimator`` (untargeted) with ART's ``attack``.

    ``fgsm``/``pgd`` take an L-inf budget ``eps`` (pixels in [0, 1]); ``cw``/``deepfool`` find minimal
    L2 perturbations; ``hopskipjump`` only queries predicted labels (a black-box attack), starting
    from seeded random images. ``seed`` also seeds numpy's global generator, which ART draws from. ``gradients``: see
    :func:`art_classifier`.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    clf = art_classifier(estimator, gradients=gradients)
    np.random.seed(seed)  # ART draws from numpy's global generator
    atk = _white_box_attack(attack, clf, eps=eps, max_iter=max_iter)
    if attack == "hopskipjump":  # ART would draw the start from an unseeded RandomState
        start = random_misclassified_start(clf, X, np.argmax(clf.predict(X), axis=1), np.random.default_rng(seed))
        return np.asarray(atk.generate(X, x_adv_init=start), dtype=np.float64)
    if y is not None and attack in ("fgsm", "pgd"):
        onehot = np.eye(clf.nb_classes)[np.searchsorted(estimator.classes_, y)]
        return np.asarray(atk.generate(X, y=onehot), dtype=np.float64)
    return np.asarray(atk.generate(X), dtype=np.float64)


def craft_transfer(victim: Any, X_query: np.ndarray, X: np.ndarray, *, proxy: Any = None, attack: str = "pgd",
                   eps: float = 0.25, seed: int = 0) -> tuple[np.ndarray, Any]:
    """Transfer attack: steal a proxy with ``X_query``, craft ``attack`` on it, return (X_adv, proxy)."""
    stolen = steal_proxy(victim, X_query, proxy)
    return craft_evasion(stolen, X, stolen.predict(X), attack=attack, eps=eps, seed=seed), stolen


def hopskipjump(clf: Any, *, max_iter: int = 10, max_eval: int = 100, init_eval: int = 10):
    """ART's untargeted HopSkipJump (Chen et al. 2020), labels only."""
    from art.attacks.evasion import HopSkipJump

    return HopSkipJump(clf, targeted=False, max_iter=max_iter, max_eval=max_eval, init_eval=init_eval, verbose=False)


def _black_box_attack(name: str, clf: Any, max_queries: int):
    from art.attacks.evasion import BoundaryAttack, GeoDA, SignOPTAttack, ZooAttack

    if name == "hopskipjump":
        return hopskipjump(clf)
    if name == "boundary":
        return BoundaryAttack(clf, targeted=False, max_iter=max(10, max_queries // 10), num_trial=5,
                              sample_size=5, init_size=50, verbose=False)
    if name == "signopt":
        return SignOPTAttack(clf, targeted=False, max_iter=20, query_limit=max_queries, k=20, verbose=False)
    if name == "geoda":
        # GeoDA splits max_iter into per-iteration query counts and fails on small values; the
        # driver's budget guard stops it at max_queries anyway
        return GeoDA(clf, norm=2, sub_dim=4, max_iter=max(1000, max_queries), bin_search_tol=0.01, verbose=False)
    if name == "zoo":
        return ZooAttack(clf, confidence=0.0, targeted=False, learning_rate=0.1, max_iter=50,
                         binary_search_steps=1, initial_const=10.0, abort_early=False, use_resize=False,
                         use_importance=False, nb_parallel=8, batch_size=1, verbose=False)
    raise ValueError(f"unknown evasion attack {name!r}; known: {', '.join(EVASION_ATTACKS)}")


def random_misclassified_start(clf: Any, x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                               tries: int = 100) -> np.ndarray:
    """Uniform random images, queried through ``clf``, until one per input has a label other than
    ``y`` (the initialisation HopSkipJump and BoundaryAttack draw from an unseeded RandomState, here
    from a seeded generator)."""
    out = np.empty_like(x)
    for i in range(len(x)):
        for _ in range(tries):
            cand = rng.uniform(0.0, 1.0, size=x[i:i + 1].shape).astype(x.dtype)
            if int(np.argmax(clf.predict(cand))) != int(y[i]):
                out[i] = cand[0]
                break
        else:
            raise RuntimeError("no misclassified random start found")
    return out


def run_evasion(api: InferenceAPI, attack: str, x: np.ndarray, *, account: str, max_queries: int = 500,
                rate: float = 2.0, start: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Run one ART black-box evasion attack on the images ``x`` through the API as ``account``.

    Stops the attack once the account has sent ``max_queries`` queries (the budget of the simulation).
    Returns a summary: queries sent, whether the final images are misclassified, and the L2 perturbation.
    """
    quiet_art()
    np.random.seed(seed)  # ART's attacks draw from numpy's global generator
    clf = api.art_classifier(account, rate=rate, start=start, seed=seed)
    base = api.count(account)
    api.limit(clf, account, max_queries)
    x = np.asarray(x, dtype=np.float32).reshape((-1, *api.input_shape))
    y_true = api.model.predict(x.reshape(len(x), -1))
    adv, finished = None, True
    shim = attack == "geoda" and "mat" not in np.__dict__
    if shim:  # ART 1.20's GeoDA calls np.mat, removed in NumPy 2; np.asmatrix is the same function
        np.mat = np.asmatrix
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {}
            if attack in ("boundary", "hopskipjump"):  # ART would draw the start from an unseeded RandomState
                kwargs["x_adv_init"] = random_misclassified_start(clf, x, y_true, np.random.default_rng(seed))
            adv = _black_box_attack(attack, clf, max_queries).generate(x=x, **kwargs)
    except QueryBudgetExceeded:
        finished = False
    finally:
        if shim:
            del np.mat
    out: dict[str, Any] = {"attack": attack, "account": account, "queries": api.count(account) - base,
                           "finished": finished}
    if adv is not None:
        pred = api.model.predict(adv.reshape(len(adv), -1))
        out["success_rate"] = float(np.mean(pred != y_true))
        out["l2"] = float(np.mean(np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)))
    return out
