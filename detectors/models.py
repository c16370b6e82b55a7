"""Model adapters: any object with ``predict_proba(X)`` is a model; these add ``features`` (hidden
activations) and ``logits`` for scikit-learn estimators, so detectors need no framework.

A PyTorch or TensorFlow model fits behind a three-line adapter::

    class TorchModel:
        def __init__(self, net): self.net = net
        def predict_proba(self, X): return torch.softmax(self.net(torch.as_tensor(X)), 1).detach().numpy()
"""

from __future__ import annotations

from typing import Any

import numpy as np

_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SklearnModel:
    """Adapter for a fitted scikit-learn classifier.

    * ``MLPClassifier``: ``features(X)`` = last hidden layer, ``hidden(X)`` = every hidden layer,
      ``logits(X)`` = pre-softmax output computed from ``coefs_``/``intercepts_``.
    * ``LogisticRegression`` / linear models: ``logits`` = ``decision_function``, ``features`` = X.
    * ``SVC`` (with ``probability=True`` for ``predict_proba``): ``logits`` = ``decision_function``.
    """

    def __init__(self, estimator: Any):
        if not hasattr(estimator, "predict_proba") and not hasattr(estimator, "decision_function"):
            raise TypeError(f"{type(estimator).__name__} has neither predict_proba nor decision_function")
        self.estimator = estimator
        self.classes_ = getattr(estimator, "classes_", None)

    # -- MLP internals ---------------------------------------------------------------------------
    def _is_mlp(self) -> bool:
        return hasattr(self.estimator, "coefs_") and hasattr(self.estimator, "intercepts_")

    def hidden(self, X: Any) -> list[np.ndarray]:
        """Activations of every hidden layer (MLP only)."""
        if not self._is_mlp():
            raise TypeError(f"{type(self.estimator).__name__} has no hidden layers")
        act = _ACTIVATIONS[self.estimator.activation]
        a = np.asarray(X, dtype=np.float64)
        out = []
        for W, b in zip(self.estimator.coefs_[:-1], self.estimator.intercepts_[:-1], strict=True):
            a = act(a @ W + b)
            out.append(a)
        return out

    def features(self, X: Any) -> np.ndarray:
        """Last hidden layer for an MLP; the input itself otherwise."""
        if self._is_mlp():
            return self.hidden(X)[-1]
        return np.asarray(X, dtype=np.float64).reshape(len(X), -1)

    def logits(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self._is_mlp():
            h = self.hidden(X)[-1] if len(self.estimator.coefs_) > 1 else X
            z = h @ self.estimator.coefs_[-1] + self.estimator.intercepts_[-1]
            if z.shape[1] == 1:  # binary MLP: one logit
                z = np.hstack([np.zeros_like(z), z])
            return z
        if hasattr(self.estimator, "decision_function"):
            z = np.asarray(self.estimator.decision_function(X), dtype=np.float64)
            if z.ndim == 1:
                z = np.stack([-z, z], axis=1)
            return z
        return np.log(np.clip(self.predict_proba(X), 1e-12, 1.0))

    def predict_proba(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if hasattr(self.estimator, "predict_proba"):
            try:
                return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
            except AttributeError:  # SVC(probability=False) exposes the attribute but raises
                pass
        return _softmax(self.logits(X))

    def predict(self, X: Any) -> np.ndarray:
        p = self.predict_proba(X)
        idx = p.argmax(axis=1)
        return self.classes_[idx] if self.classes_ is not None else idx


def as_model(model: Any) -> Any:
    """Wrap scikit-learn estimators in :class:`SklearnModel`; pass other models through unchanged."""
    if model is None or isinstance(model, SklearnModel):
        return model
    mod = type(model).__module__
    if mod.startswith("sklearn.") or hasattr(model, "coefs_"):
        return SklearnModel(model)
    if not hasattr(model, "predict_proba"):
        raise TypeError(f"a model needs predict_proba(X); {type(model).__name__} has none")
    return model
