"""Statistical detection (Grosse, Manoharan, Papernot, Backes & McDaniel, "On the (Statistical)
Detection of Adversarial Examples", arXiv:1702.06280, 2017; seed ref 26).

Batch: a kernel two-sample test (maximum mean discrepancy, Gaussian kernel, permutation p-value)
asks whether a batch of inputs comes from the clean distribution (:meth:`GrosseMMD.test_batch`).
Per input: the paper adds an outlier class for adversarial examples to the classifier; here a
separate classifier learns the K clean classes plus class K for the given adversarial examples and
scores P(outlier). Without adversarial examples the per-input score is the MMD between the single
input and the clean reference sample, with a kernel width chosen by leave-one-out likelihood.

Adapters: any (the model is optional).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, check_array, register
from .models import make_classifier, probabilities


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def _loo_bandwidth(d: np.ndarray, gamma0: float, dim: int) -> float:
    """Kernel width for the singleton MMD: the leave-one-out maximum-likelihood Gaussian KDE width on
    the reference sample, searched over ``gamma0 * 2**k`` (one input carries no distribution, so
    the median heuristic of the batch test is far too wide for it)."""
    best, best_ll = gamma0, -np.inf
    for k in range(13):
        g = gamma0 * 2.0**k
        K = np.exp(-g * d)
        np.fill_diagonal(K, 0.0)
        dens = K.sum(axis=1) / (len(d) - 1)
        if np.any(dens <= 0):
            break
        ll = float(np.log(dens).mean() + 0.5 * dim * np.log(g / np.pi))
        if ll <= best_ll:
            break
        best, best_ll = g, ll
    return best


@register("grosse_mmd")
class GrosseMMD(InputDetector):
    """MMD two-sample test per batch; per-input outlier-class probability (or singleton MMD)."""

    method = "grosse2017-statistical"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL, labels=Need.OPTIONAL, model=Need.OPTIONAL, probabilities=Need.OPTIONAL)

    def __init__(self, n_reference: int = 500, n_permutations: int = 200, alpha: float = 0.05,
                 classifier: Any = None, random_state: int = 0, fpr: float = 0.05):
        self.n_reference = n_reference
        self.n_permutations = n_permutations
        self.alpha = alpha
        self.classifier = classifier
        self.random_state = random_state
        self.fpr = fpr

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        import warnings

        from sklearn.base import clone

        rng = np.random.default_rng(self.random_state)
        n = min(int(self.n_reference), len(X))
        self.reference_ = X[rng.choice(len(X), n, replace=False)]
        d = _sq_dists(self.reference_, self.reference_)
        self.gamma_ = 1.0 / float(np.median(d[d > 0]))  # median heuristic
        self.gamma_input_ = _loo_bandwidth(d, self.gamma_, X.shape[1])
        self.ref_mean_kernel_ = float(np.exp(-self.gamma_input_ * d).mean())
        self.outlier_ = None
        if X_adv is not None:
            if y is None and model is None:
                raise ValueError("the outlier-class variant needs labels y (or a model to label X)")
            labels = np.asarray(y) if y is not None else probabilities(model, X).argmax(axis=1)
            classes = np.unique(labels)
            self.outlier_label_ = "__adversarial__" if labels.dtype.kind in "OUS" else int(classes.max()) + 1
            Z = np.vstack([X, X_adv])
            t = np.r_[labels, np.full(len(X_adv), self.outlier_label_, dtype=labels.dtype)]
            clf = clone(self.classifier) if self.classifier is not None else make_classifier(
                (64,), random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.outlier_ = clf.fit(Z, t)
            self.outlier_col_ = int(np.flatnonzero(self.outlier_.classes_ == self.outlier_label_)[0])

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        if self.outlier_ is not None:
            return self.outlier_.predict_proba(X)[:, self.outlier_col_]
        # MMD^2({x}, reference) = k(x,x) - 2 mean_j k(x, r_j) + mean_jl k(r_j, r_l), with k(x,x) = 1
        k = np.exp(-self.gamma_input_ * _sq_dists(X, self.reference_)).mean(axis=1)
        return 1.0 - 2.0 * k + self.ref_mean_kernel_

    # -- batch test --------------------------------------------------------------------------
    def mmd2(self, A: np.ndarray, B: np.ndarray) -> float:
        """Biased estimate of MMD^2 between samples ``A`` and ``B`` under the fitted Gaussian kernel."""
        g = self.gamma_
        return float(np.exp(-g * _sq_dists(A, A)).mean() + np.exp(-g * _sq_dists(B, B)).mean()
                     - 2.0 * np.exp(-g * _sq_dists(A, B)).mean())

    def test_batch(self, X: Any) -> tuple[float, float]:
        """(MMD^2, permutation p-value) of the batch ``X`` against the clean reference sample."""
        self._check_fitted("reference_")
        X = check_array(X, n_features=self.n_features_in_)
        if len(X) < 2:
            raise ValueError("a two-sample test needs a batch of at least 2 inputs")
        rng = np.random.default_rng(self.random_state)
        ref = self.reference_
        stat = self.mmd2(X, ref)
        pooled = np.vstack([X, ref])
        K = np.exp(-self.gamma_ * _sq_dists(pooled, pooled))
        n = len(X)
        exceed = 0
        for _ in range(int(self.n_permutations)):
            perm = rng.permutation(len(pooled))
            a, b = perm[:n], perm[n:]
            v = K[np.ix_(a, a)].mean() + K[np.ix_(b, b)].mean() - 2.0 * K[np.ix_(a, b)].mean()
            exceed += v >= stat
        return stat, (exceed + 1.0) / (int(self.n_permutations) + 1.0)

    def detect_batch(self, X: Any, *, account: str | None = None, time: datetime | None = None,
                     source_ip: str | None = None, session: str | None = None) -> list:
        """One event when the batch differs from clean data at level ``alpha`` (evidence: MMD, p)."""
        stat, p = self.test_batch(X)
        if p >= self.alpha:
            return []
        return [self.make_event(1.0 - p, threshold=1.0 - self.alpha, account=account, time=time,
                                source_ip=source_ip, session=session,
                                evidence={"mmd2": stat, "p_value": p, "batch_size": int(len(np.asarray(X)))})]
