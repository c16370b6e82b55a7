"""Kernel density and Bayesian uncertainty (Feinman, Curtin, Shintre & Gardner, "Detecting
Adversarial Samples from Artifacts", arXiv:1703.00410, 2017; seed ref 29).

KD: a Gaussian kernel density of the last hidden layer, fitted per class on clean training data and
evaluated under the predicted class (adversarial inputs land off the class's submanifold: low density).
BU: the variance of the model's output under Monte-Carlo dropout. Stand-in (the scikit-learn MLP has
no dropout layers): dropout masks are applied at inference to the hidden activations of a scikit-learn
MLP (``uncertainty="dropout"``), or a bootstrap ensemble of clones of the model is trained
(``uncertainty="bootstrap"``, any scikit-learn classifier). The paper combines both features with a
logistic regression trained on clean vs adversarial samples; without ``X_adv`` the two standardised
features are added (``-KD + BU``).

Adapters: SklearnModel MLPs and TorchModel (Monte-Carlo dropout on the features), other scikit-learn
classifiers (bootstrap ensemble); OnnxModel and ArtModel cannot be refitted for the bootstrap and are
refused with a message.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .base import InputDetector, Need, Needs, register
from .models import SklearnModel, TorchModel, _softmax, late_layer, probabilities, require_model

UNCERTAINTY = ("auto", "dropout", "bootstrap")


@register("kd_bu")
class KernelDensityUncertainty(InputDetector):
    """Score from kernel density (KD) on the last hidden layer and dropout/bootstrap uncertainty (BU)."""

    method = "feinman2017-kd-bu"
    needs = Needs(trusted_data=Need.REQUIRED, adversarial_examples=Need.OPTIONAL, labels=Need.OPTIONAL, model=Need.REQUIRED, probabilities=Need.REQUIRED,
                  activations=Need.OPTIONAL, logits=Need.OPTIONAL)

    def __init__(self, bandwidth: float | str = "scale", uncertainty: str = "auto", n_passes: int = 30,
                 dropout: float = 0.3, n_members: int = 8, max_per_class: int = 400, random_state: int = 0,
                 fpr: float = 0.05):
        self.bandwidth = bandwidth
        self.uncertainty = uncertainty
        self.n_passes = n_passes
        self.dropout = dropout
        self.n_members = n_members
        self.max_per_class = max_per_class
        self.random_state = random_state
        self.fpr = fpr

    # -- the two features --------------------------------------------------------------------
    def kernel_density(self, X: np.ndarray, model: Any) -> np.ndarray:
        """Log kernel density of each input's late-layer features under its predicted class."""
        F = late_layer(model, X) / self.feature_scale_
        pred = probabilities(model, X).argmax(axis=1)
        out = np.full(len(X), -np.inf)
        for k, kde in self.kdes_.items():
            rows = pred == k
            if rows.any():
                out[rows] = kde.score_samples(F[rows])
        return np.maximum(out, -1e6)  # classes never seen in training: very low density

    def bayesian_uncertainty(self, X: np.ndarray, model: Any) -> np.ndarray:
        """Predictive variance ``mean_t ||p_t||^2 - ||mean_t p_t||^2`` over dropout passes or members."""
        P = np.stack(list(self._stochastic_outputs(X, model)))  # (T, n, K)
        return (P ** 2).sum(axis=2).mean(axis=0) - (P.mean(axis=0) ** 2).sum(axis=1)

    def _stochastic_outputs(self, X: np.ndarray, model: Any):
        if self.mode_ == "bootstrap":
            for m in self.members_:
                yield probabilities(m, X)
            return
        rng = np.random.default_rng(self.random_state)
        keep = 1.0 - float(self.dropout)
        if isinstance(model, TorchModel):
            last, (W, b) = model.features(X), model.output_layer()
        else:
            last, W, b = model.hidden(X)[-1], model.estimator.coefs_[-1], model.estimator.intercepts_[-1]
        for _ in range(int(self.n_passes)):
            # dropout on the last hidden layer's units, rescaled (inverted dropout)
            h = last * (rng.random(last.shape) < keep) / keep
            z = h @ W + b
            if z.shape[1] == 1:
                z = np.hstack([np.zeros_like(z), z])
            yield _softmax(z)

    # -- fit / score -------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any, X_adv: np.ndarray | None = None) -> None:
        from sklearn.neighbors import KernelDensity

        if self.uncertainty not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {self.uncertainty!r}")
        if not 0 < float(self.dropout) < 1:
            raise ValueError(f"dropout must be in (0, 1), got {self.dropout}")
        model = require_model(model, "KernelDensityUncertainty")
        is_mlp = (isinstance(model, SklearnModel) and model._is_mlp()) or (isinstance(model, TorchModel)
                                                                           and model.layer is None)
        mode = self.uncertainty if self.uncertainty != "auto" else ("dropout" if is_mlp else "bootstrap")
        if mode == "dropout" and not is_mlp:
            raise ValueError("uncertainty='dropout' needs a scikit-learn MLP or a TorchModel (default layer); "
                             "use 'bootstrap' (scikit-learn classifiers)")
        self.mode_ = mode
        p = probabilities(model, X)
        labels = p.argmax(axis=1) if y is None else np.searchsorted(_classes(model, p), y)
        F = late_layer(model, X)
        self.feature_scale_ = float(F.std()) or 1.0
        F = F / self.feature_scale_
        bw = self.bandwidth
        if bw == "scale":  # Scott-like rule on the standardised features
            bw = float(len(F) ** (-1.0 / (F.shape[1] + 4)))
        rng = np.random.default_rng(self.random_state)
        self.kdes_ = {}
        for k in np.unique(labels):
            rows = np.flatnonzero(labels == k)
            if len(rows) > self.max_per_class:
                rows = rng.choice(rows, self.max_per_class, replace=False)
            self.kdes_[int(k)] = KernelDensity(bandwidth=float(bw)).fit(F[rows])
        if mode == "bootstrap":
            self.members_ = self._bootstrap(model, X, y if y is not None else p.argmax(axis=1), rng)
        feats = self._features(X, model)
        self.mu_, self.sd_ = feats.mean(axis=0), feats.std(axis=0) + 1e-12
        self.combiner_ = None
        if X_adv is not None:
            from sklearn.linear_model import LogisticRegression

            Z = np.vstack([(feats - self.mu_) / self.sd_, (self._features(X_adv, model) - self.mu_) / self.sd_])
            t = np.r_[np.zeros(len(X)), np.ones(len(X_adv))]
            self.combiner_ = LogisticRegression().fit(Z, t)

    def _bootstrap(self, model: Any, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> list[Any]:
        from sklearn.base import clone

        est = getattr(model, "estimator", None)
        if est is None or not hasattr(est, "get_params"):
            raise ValueError("uncertainty='bootstrap' needs a scikit-learn estimator to clone")
        members = []
        for i in range(int(self.n_members)):
            rows = rng.integers(0, len(X), len(X))
            m = clone(est)
            if "random_state" in m.get_params():
                m.set_params(random_state=int(self.random_state) + i + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                members.append(m.fit(X[rows], np.asarray(y)[rows]))
        return members

    def _features(self, X: np.ndarray, model: Any) -> np.ndarray:
        return np.column_stack([self.kernel_density(X, model), self.bayesian_uncertainty(X, model)])

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:
        model = require_model(model, "KernelDensityUncertainty")
        Z = (self._features(X, model) - self.mu_) / self.sd_
        if self.combiner_ is not None:
            return self.combiner_.decision_function(Z)
        return -Z[:, 0] + Z[:, 1]


def _classes(model: Any, p: np.ndarray) -> np.ndarray:
    classes = getattr(model, "classes_", None)
    return np.asarray(classes) if classes is not None else np.arange(p.shape[1])
