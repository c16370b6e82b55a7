"""Out-of-distribution query share per account, after Atli et al. 2020.

B. G. Atli, S. Szyller, M. Juuti, S. Marchal, N. Asokan, "Extraction of Complex DNN Models: Real
Threat or Boogeyman?", EDSMLS 2020, Springer CCIS vol. 1271 (seed ref. 38).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from .base import Need, Needs, StreamDetector, check_array, check_positive_int, register


@dataclass
class _AtliState:
    flags: deque = field(default_factory=deque)
    n_ood: int = 0
    seen: int = 0
    detections: int = 0


@register("atli")
class AtliOOD(StreamDetector):
    """Flag each query as in- or out-of-distribution for the protected model's task, and alarm when
    the share of out-of-distribution queries among an account's last ``window`` queries exceeds a
    threshold calibrated on simulated benign accounts (about ``fpr`` of them alarmed).

    Atli et al. observe that Knockoff-style extraction draws its queries from a distribution other
    than the victim's, and propose a binary classifier separating in- from out-of-distribution
    queries, with a client flagged when too many of its queries are out-of-distribution. With
    ``fit(..., X_ood=...)`` (examples of attack queries: ``needs.adversarial_examples``) that is what this does (a logistic regression on in- vs
    out-of-distribution examples). Without ``X_ood`` (a defender rarely knows the attacker's data)
    a one-class stand-in is used instead: Mahalanobis distance in a PCA of the benign data, a query
    being out-of-distribution above the ``1 - query_fpr`` quantile of held-out benign distances.
    """

    method = "atli2020-extraction"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL)
    calibration_with_replacement = True

    def __init__(self, window: int = 50, min_queries: int = 20, query_fpr: float = 0.05, n_components: int = 20,
                 fpr: float = 0.01, calibration_streams: int = 40, calibration_length: int = 300,
                 max_accounts: int = 10_000, random_state: int = 0):
        self.window = window
        self.min_queries = min_queries
        self.query_fpr = query_fpr
        self.n_components = n_components
        self.fpr = fpr
        self.calibration_streams = calibration_streams
        self.calibration_length = calibration_length
        self.max_accounts = max_accounts
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, *, model: Any = None, X_ood: Any = None, X_calib: Any = None) -> AtliOOD:
        X = check_array(X)
        check_positive_int("window", self.window, minimum=2)
        check_positive_int("min_queries", self.min_queries)
        if self.min_queries > self.window:
            raise ValueError(f"min_queries={self.min_queries} exceeds window={self.window}")
        if not 0 < float(self.query_fpr) < 1:
            raise ValueError(f"query_fpr must be in (0, 1); got {self.query_fpr}")
        self.n_features_in_ = X.shape[1]
        rng = np.random.default_rng(self.random_state)
        if X_calib is None:
            perm = rng.permutation(len(X))
            X, X_calib = X[perm[: len(X) // 2]], X[perm[len(X) // 2:]]
        else:
            X_calib = check_array(X_calib, n_features=self.n_features_in_, name="X_calib")
        if X_ood is not None:
            from sklearn.linear_model import LogisticRegression

            X_ood = check_array(X_ood, n_features=self.n_features_in_, name="X_ood")
            data = np.vstack([X, X_ood])
            target = np.r_[np.zeros(len(X)), np.ones(len(X_ood))]
            self.classifier_ = LogisticRegression(max_iter=1000, class_weight="balanced").fit(data, target)
            self.mode_ = "classifier"
            self.ood_cut_ = 0.0  # decision_function > 0: out of distribution
        else:
            from sklearn.covariance import LedoitWolf
            from sklearn.decomposition import PCA

            self.pca_ = PCA(n_components=min(self.n_components, *X.shape), random_state=0).fit(X)
            Z = self.pca_.transform(X)
            self.center_ = Z.mean(0)
            self.precision_ = LedoitWolf().fit(Z).precision_
            self.mode_ = "mahalanobis"
            self.ood_cut_ = float(np.quantile(self.ood_score(X_calib), 1.0 - float(self.query_fpr)))
        self.benign_ood_share_ = float(np.mean(self.ood_score(X_calib) > self.ood_cut_))
        self.reset()
        self.threshold_ = self._calibrate(X_calib)
        return self

    def ood_score(self, X: Any) -> np.ndarray:
        """Per-query out-of-distribution score (above ``ood_cut_`` = out of distribution)."""
        self._check_fitted("mode_")
        X = check_array(X, n_features=self.n_features_in_, allow_1d=True)
        if self.mode_ == "classifier":
            return self.classifier_.decision_function(X)
        D = (X - self.pca_.mean_) @ self.pca_.components_.T - self.center_
        return np.sqrt(np.einsum("ij,jk,ik->i", D, self.precision_, D))

    def _new_state(self) -> _AtliState:
        return _AtliState(flags=deque(maxlen=int(self.window)))

    def _reset_state(self, state: _AtliState) -> None:
        state.flags.clear()
        state.n_ood = 0

    def _score_one(self, state: _AtliState, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        ood = bool(self.ood_score(x)[0] > self.ood_cut_)
        if len(state.flags) == state.flags.maxlen:
            state.n_ood -= state.flags[0]
        state.flags.append(ood)
        state.n_ood += ood
        n = len(state.flags)
        if n < self.min_queries:
            return float("nan"), {}
        share = state.n_ood / n
        return share, {"ood_share": round(share, 4), "ood_queries": state.n_ood, "queries_in_window": n,
                       "benign_ood_share": round(self.benign_ood_share_, 4), "mode": self.mode_}
