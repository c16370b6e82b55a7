"""De-Pois (Chen, Zhang, Zhang, Wang, Liu, "De-Pois: An Attack-Agnostic Defense against Data Poisoning
Attacks", IEEE Transactions on Information Forensics and Security, 2021).

De-Pois needs only a small *trusted* clean set. It (1) augments that set with synthetic samples
from a conditional generator, keeping only the samples an authenticator accepts; (2) trains a
*mimic model* on the augmented set -- a conditional critic ``D(x, y)`` that behaves like a model
trained on clean data, scoring high for plausible (input, label) pairs; (3) scores every sample of
the training set to inspect with ``D`` and flags those whose output falls below a detection
boundary ``mu - k * sigma``, where ``mu`` and ``sigma`` describe the critic's outputs on clean data.
Nothing about the attack is assumed: backdoors (an image of a "3" with a trigger relabelled "0")
and flipped labels both make a pair the clean-data critic finds implausible.

As implemented (``fit(X_trusted, y_trusted)`` then ``inspect(X, y)``):

* generator: per class, SMOTE-style interpolation between a trusted sample and one of its
  ``n_neighbors`` nearest same-class trusted samples, plus Gaussian noise (std ``noise``), clipped
  to the trusted data's range; ``augment_ratio`` synthetic samples per trusted sample, seeded.
* authenticator: a synthetic sample is kept only if most of its ``n_neighbors`` nearest *real*
  trusted samples carry its label (drops interpolations that crossed into another class).
* mimic model: a scikit-learn ``MLPClassifier`` trained on real + kept synthetic samples; the
  critic output is the logit margin ``D(x, y) = z_y(x) - max_{j != y} z_j(x)``.
* boundary: ``mu`` and ``sigma`` are the mean and std of ``D`` on the trusted data *out of fold*
  (``n_folds``-fold cross-fitting, each fold's mimic trained without it, so the outputs are those
  of unseen clean data); the final mimic is trained on all trusted data. Per-sample suspicion
  score ``(mu - D(x, y)) / sigma`` (higher = more suspicious); flagged when above ``k``.
* kizashi verdict: the out-of-fold trusted scores also give the expected clean share ``p0`` above a
  stricter alarm boundary ``verdict_k`` (flagging uses ``k``; alarming on the stricter one keeps the
  clean-data false-alarm rate low while ``k`` keeps recall high). Two ``z`` statistics are compared
  with ``suspicion_z``: the alarmed share of the whole set against ``p0`` (binomial, with the
  uncertainty of ``p0`` estimated from the trusted set added) -- untargeted poisoning such as label
  flipping -- and, per label, the alarmed share of that label against the rest of the set (two
  proportions, variance at least ``p0``) -- a backdoor relabels its poisons to one target. The
  dataset is suspicious when the largest ``z`` exceeds ``suspicion_z``. ``target_class`` is the label
  with the largest per-label ``z`` when that is significant and the label holds at least
  ``target_share`` of the total excess of alarms (random label flipping spreads over all labels ->
  None). Samples past ``k`` are listed in ``flagged`` only when the dataset is suspicious (a clean
  set always has about ``clean_flag_rate_`` of them; ``details["n_below_boundary"]`` counts them).

Simplifications vs the paper: the conditional GAN generator is replaced by the seeded
interpolation generator above, the authenticator by the nearest-neighbour label check, and the
conditional WGAN-GP discriminator by the logit margin of an MLP classifier (a conditional score of
the same role, trained by maximum likelihood, not adversarially); the boundary statistics come from
cross-fitted trusted outputs instead of a separate validation split. The target model is not
needed (``model`` is accepted and ignored). Labels absent from the trusted data cannot be scored
(ValueError). Deterministic for a given ``random_state``.

Measured recall, clean false-flag rate and verdicts on digits: docs/detectors.md.

Adapters: none needed (learns from trusted data).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import DatasetDetector, Need, Needs, Report, check_array, check_labels, register


@register("depois")
class DePois(DatasetDetector):
    method = "chen2021-depois"
    needs = Needs(labels=Need.REQUIRED, trusted_data=Need.REQUIRED)

    def __init__(self, k: float = 2.0, verdict_k: float = 2.5, augment_ratio: int = 2, n_neighbors: int = 5,
                 noise: float = 0.03, hidden_layer_sizes: tuple[int, ...] = (64,), alpha: float = 1e-3,
                 max_iter: int = 300, n_folds: int = 5, suspicion_z: float = 6.0, target_share: float = 0.5,
                 random_state: int = 0):
        self.k = k
        self.verdict_k = verdict_k
        self.augment_ratio = augment_ratio
        self.n_neighbors = n_neighbors
        self.noise = noise
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.max_iter = max_iter
        self.n_folds = n_folds
        self.suspicion_z = suspicion_z
        self.target_share = target_share
        self.random_state = random_state

    # -- stage 1: synthetic data (generator + authenticator) ----------------------------------------
    def _augment(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.neighbors import NearestNeighbors

        lo, hi = X.min(axis=0), X.max(axis=0)
        Xs, ys = [X], [y]
        for c in np.unique(y):
            Xc = X[y == c]
            n = int(self.augment_ratio) * len(Xc)
            if n == 0 or len(Xc) < 2:
                continue
            kk = min(self.n_neighbors + 1, len(Xc))
            _, ind = NearestNeighbors(n_neighbors=kk).fit(Xc).kneighbors(Xc)
            a = rng.integers(0, len(Xc), n)
            b = ind[a, rng.integers(1, kk, n)]
            lam = rng.random((n, 1))
            fake = Xc[a] + lam * (Xc[b] - Xc[a]) + rng.normal(0.0, self.noise, (n, X.shape[1]))
            Xs.append(np.clip(fake, lo, hi))
            ys.append(np.full(n, c, dtype=y.dtype))
        if len(Xs) == 1:
            return X, y
        fake_X, fake_y = np.vstack(Xs[1:]), np.concatenate(ys[1:])
        kk = min(self.n_neighbors, len(X))
        _, ind = NearestNeighbors(n_neighbors=kk).fit(X).kneighbors(fake_X)
        keep = (y[ind] == fake_y[:, None]).mean(axis=1) > 0.5  # authenticator
        return np.vstack([X, fake_X[keep]]), np.concatenate([y, fake_y[keep]])

    # -- stage 2: mimic model ------------------------------------------------------------------------
    def _mimic(self, X: np.ndarray, y: np.ndarray, seed: int) -> Any:
        from sklearn.neural_network import MLPClassifier
        from threadpoolctl import threadpool_limits

        Xa, ya = self._augment(X, y, np.random.default_rng(seed))
        # small matrices: multi-threaded BLAS only adds contention (10x slower on a busy 2-core host)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            return MLPClassifier(tuple(self.hidden_layer_sizes), alpha=self.alpha, max_iter=self.max_iter,
                                 random_state=seed).fit(Xa, ya)

    @staticmethod
    def _critic(mimic: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Logit margin of label ``y``: ``z_y - max_{j != y} z_j``."""
        from .models import as_model

        z = np.asarray(as_model(mimic).logits(X), dtype=np.float64)
        if z.shape[1] == 1:  # binary MLP: one logit for classes_[1]
            z = np.hstack([np.zeros_like(z), z])
        col = np.searchsorted(mimic.classes_, y)
        rows = np.arange(len(X))
        zy = z[rows, col].copy()
        z[rows, col] = -np.inf
        return zy - z.max(axis=1)

    def _fit(self, X: np.ndarray, y: np.ndarray, model: Any) -> None:
        """Learn the mimic model and the detection boundary from trusted clean ``(X, y)``."""
        from sklearn.model_selection import StratifiedKFold

        if self.k <= 0 or self.verdict_k <= 0:
            raise ValueError(f"k and verdict_k must be > 0, got {self.k}, {self.verdict_k}")
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError("the trusted data must contain at least two labels")
        if counts.min() < self.n_folds:
            raise ValueError(f"each label needs at least n_folds={self.n_folds} trusted samples; "
                             f"label {classes[np.argmin(counts)]!r} has {counts.min()}")
        oof = np.zeros(len(X))
        folds = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        for i, (tr, te) in enumerate(folds.split(X, y)):
            oof[te] = self._critic(self._mimic(X[tr], y[tr], self.random_state + i + 1), X[te], y[te])
        self.mimic_ = self._mimic(X, y, self.random_state)
        self.classes_ = self.mimic_.classes_
        self.n_features_in_ = X.shape[1]
        self.n_trusted_ = len(X)
        self.mu_ = float(oof.mean())
        self.sigma_ = float(max(oof.std(), 1e-12))
        self.threshold_ = float(self.mu_ - self.k * self.sigma_)  # the detection boundary on D(x, y)
        oof_scores = (self.mu_ - oof) / self.sigma_
        self.clean_flag_rate_ = float(np.mean(oof_scores > self.k))
        self.expected_flag_rate_ = float(max(np.mean(oof_scores > self.verdict_k), 0.5 / len(X)))

    def score_samples(self, X: Any, y: Any) -> np.ndarray:
        """Per-sample suspicion ``(mu - D(x, y)) / sigma``: how many trusted stds below the clean mean."""
        self._check_fitted("mimic_")
        X = check_array(X, n_features=self.n_features_in_)
        y = check_labels(y, len(X))
        unseen = ~np.isin(y, self.classes_)
        if unseen.any():
            raise ValueError(f"labels {sorted(set(y[unseen].tolist()))} do not occur in the trusted data")
        return (self.mu_ - self._critic(self.mimic_, X, y)) / self.sigma_

    def _z(self, n_flagged: float, n: int) -> float:
        """Binomial z of a flagged count against the trusted false-flag rate (its uncertainty included)."""
        p0 = self.expected_flag_rate_
        sd = np.sqrt(p0 * (1 - p0) * (1.0 / n + 1.0 / self.n_trusted_))
        return float((n_flagged / n - p0) / sd)

    def _z_labels(self, f_c: np.ndarray, n_c: np.ndarray) -> np.ndarray:
        """Two-proportion z of each label's flagged share against the rest of the inspected set."""
        f_r, n_r = f_c.sum() - f_c, n_c.sum() - n_c
        p = max(f_c.sum() / n_c.sum(), self.expected_flag_rate_)  # pooled, at least the clean rate
        with np.errstate(divide="ignore", invalid="ignore"):
            sd = np.sqrt(p * (1 - p) * (1.0 / n_c + 1.0 / np.maximum(n_r, 1)))
            z = (f_c / n_c - f_r / np.maximum(n_r, 1)) / sd
        return np.where(n_r > 0, z, 0.0)

    def _inspect(self, X: np.ndarray, y: np.ndarray, model: Any) -> Report:
        scores = self.score_samples(X, y)
        flagged = np.flatnonzero(scores > self.k)
        alarm = scores > self.verdict_k
        z_all = self._z(int(alarm.sum()), len(y))
        labels, n_c = np.unique(y, return_counts=True)
        f_c = np.array([np.count_nonzero(alarm & (y == c)) for c in labels])
        z_c = self._z_labels(f_c, n_c)
        excess = f_c - n_c * (f_c.sum() - f_c) / np.maximum(n_c.sum() - n_c, 1)
        top = int(np.argmax(z_c))
        positive = float(np.clip(excess, 0, None).sum())
        share = float(excess[top] / positive) if positive > 0 else 0.0
        target = None
        if z_c[top] > self.suspicion_z and share >= self.target_share:
            t = labels[top]
            target = int(t) if np.issubdtype(labels.dtype, np.integer) else t
        z = max(z_all, float(z_c.max()))
        suspicious = z > self.suspicion_z
        below = len(flagged)
        if not suspicious:  # the clean-data false-flag rate: no event, no indices
            flagged = np.array([], dtype=int)
        return Report(detector=self.name, scores=scores, flagged=flagged, target_class=target,
                      suspicious=bool(suspicious), score=round(z, 3), threshold=float(self.suspicion_z),
                      details={"n_samples": int(len(y)), "n_below_boundary": int(below),
                               "flagged_share": round(below / len(y), 4),
                               "clean_flag_rate": round(self.clean_flag_rate_, 4),
                               "verdict_share": round(float(alarm.mean()), 4),
                               "expected_verdict_rate": round(self.expected_flag_rate_, 4),
                               "z_overall": round(z_all, 3), "z_top_label": round(float(z_c[top]), 3),
                               "top_label_excess_share": round(share, 3),
                               "boundary": round(self.threshold_, 4), "k": float(self.k),
                               "verdict_k": float(self.verdict_k)})
