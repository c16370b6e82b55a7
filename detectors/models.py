"""Model adapters: any object with ``predict_proba(X)`` is a model; these add ``features`` (hidden
activations), ``logits`` and input gradients (``loss_gradient``, ``class_gradient``) for
scikit-learn estimators, so detectors need no framework. Detectors ask the adapter for these
outputs (the names in :data:`OUTPUTS`, as in a detector's ``needs``); an adapter declares what it
can give in ``provides``, read by :func:`provides`.

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


#: what a detector can ask a model adapter for, and the adapter methods that give it
OUTPUTS = {"probabilities": ("predict_proba",), "logits": ("logits",), "activations": ("features",),
           "gradients": ("loss_gradient", "class_gradient")}


def provides(model: Any, output: str) -> bool:
    """Whether the adapted ``model`` gives ``output`` (a key of :data:`OUTPUTS`): its declared
    ``provides`` when it has one (as :class:`SklearnModel` does), else whether it has the methods."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown model output {output!r}; known: {sorted(OUTPUTS)}")
    declared = getattr(model, "provides", None)
    if declared is not None:
        return output in declared
    return all(hasattr(model, m) for m in OUTPUTS[output])


def _activation_derivative(name: str, a: np.ndarray) -> np.ndarray:
    """Derivative of an MLP activation, written in terms of its output ``a``."""
    if name == "relu":
        return (a > 0).astype(np.float64)
    if name == "tanh":
        return 1.0 - a * a
    if name == "logistic":
        return a * (1.0 - a)
    return np.ones_like(a)


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

    @property
    def provides(self) -> frozenset[str]:
        """The outputs this estimator really gives: hidden activations for an MLP, logits for an MLP
        or a model with ``decision_function``, input gradients for an MLP or a linear model."""
        est = self.estimator
        out = {"probabilities"}
        if self._is_mlp() or hasattr(est, "decision_function"):
            out.add("logits")
        if self._is_mlp():
            out.add("activations")
        if self._is_mlp() or (hasattr(est, "coef_") and not hasattr(est, "support_vectors_")):
            out.add("gradients")
        return frozenset(out)

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

    # -- gradients (white-box helpers: MLPs and linear models, numpy only) ---------------------
    def logit_vjp(self, X: Any, G: Any) -> np.ndarray:
        """Gradient w.r.t. each input of ``sum_k G[n, k] * logits(X)[n, k]`` (vector-Jacobian product).

        Back-propagates through ``coefs_`` for an MLP and through ``coef_`` for linear models;
        other estimators (e.g. kernel SVC) raise ``TypeError``.
        """
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        G = np.asarray(G, dtype=np.float64)
        est = self.estimator
        if self._is_mlp():
            act = est.activation
            acts = [X]
            a = X
            for W, b in zip(est.coefs_[:-1], est.intercepts_[:-1], strict=True):
                a = _ACTIVATIONS[act](a @ W + b)
                acts.append(a)
            W_out = est.coefs_[-1]
            g = (G[:, 1] - G[:, 0])[:, None] if W_out.shape[1] == 1 else G  # binary: padded logits
            g = g @ W_out.T
            for i in range(len(est.coefs_) - 1, 0, -1):
                g = g * _activation_derivative(act, acts[i])
                g = g @ est.coefs_[i - 1].T
            return g
        if hasattr(est, "coef_") and not hasattr(est, "support_vectors_"):  # linear models, not SVC
            W = np.asarray(est.coef_, dtype=np.float64)
            if W.shape[0] == 1:  # binary: logits padded as [-z, z]
                return (G[:, 1] - G[:, 0])[:, None] * W[0]
            return G @ W
        raise TypeError(f"no input gradient for {type(est).__name__}; use a black-box method")

    def loss_gradient(self, X: Any, y: Any) -> np.ndarray:
        """Gradient of the cross-entropy of ``softmax(logits)`` against labels ``y`` w.r.t. ``X``."""
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        p = _softmax(self.logits(X))
        onehot = self._onehot(y, p.shape[1])
        return self.logit_vjp(X, p - onehot)

    def class_gradient(self, X: Any, label: Any) -> np.ndarray:
        """Gradient of ``log softmax(logits)[label]`` w.r.t. ``X`` (one label per row, or one for all)."""
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        p = _softmax(self.logits(X))
        labels = np.broadcast_to(np.asarray(label, dtype=int), (len(X),))
        onehot = np.zeros_like(p)
        onehot[np.arange(len(X)), labels] = 1.0
        return self.logit_vjp(X, onehot - p)

    def _onehot(self, y: Any, n_classes: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2:
            return y.astype(np.float64)
        idx = np.searchsorted(self.classes_, y) if self.classes_ is not None else y.astype(int)
        out = np.zeros((len(y), n_classes))
        out[np.arange(len(y)), idx] = 1.0
        return out

    @property
    def n_classes(self) -> int:
        if self.classes_ is not None:
            return len(self.classes_)
        raise AttributeError("the wrapped estimator has no classes_")

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


# -- helpers shared by the input/output detectors ------------------------------------------------


def distilled_reference(model: Any, X: np.ndarray, *, seed: int = 0, n_neighbors: int = 5) -> Any:
    """A backdoor-free stand-in for ``model``: an MLP distilled from its labels on clean inputs ``X``.

    Clean inputs never carry a trigger, so the reference learns the suspect's clean behaviour only,
    except for clean inputs that happen to resemble the trigger: a backdoored suspect labels them
    with the target and would teach the reference part of the backdoor. Inputs whose suspect label
    disagrees with the majority label of their ``n_neighbors`` nearest clean inputs are therefore
    left out. Same hidden layers as the suspect when it is an MLP, else (64,); single-threaded BLAS.
    Used by the model detectors ``b3d`` and ``top``.
    """
    import warnings

    from sklearn.neighbors import NearestNeighbors
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    labels = np.asarray(model.predict_proba(X)).argmax(axis=1)
    keep = np.ones(len(X), dtype=bool)
    if n_neighbors and len(X) > n_neighbors:
        idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(X).kneighbors(X, return_distance=False)
        votes = labels[idx[:, 1:]]
        majority = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
        keep = majority == labels
    est = getattr(model, "estimator", model)
    hidden = tuple(w.shape[1] for w in getattr(est, "coefs_", [])[:-1]) or (64,)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        ref = MLPClassifier(hidden, max_iter=300, random_state=seed).fit(X[keep], labels[keep])
    return as_model(ref)


def require_model(model: Any, who: str) -> Any:
    """``model`` adapted by :func:`as_model`, or ``ValueError`` saying ``who`` needs one."""
    if model is None:
        raise ValueError(f"{who} needs the protected model: pass model=... to fit (or score)")
    return as_model(model)


def probabilities(model: Any, X: np.ndarray) -> np.ndarray:
    """``model.predict_proba(X)`` as a float array, checked to be (n_samples, n_classes)."""
    p = np.asarray(model.predict_proba(X), dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(X):
        raise ValueError(f"predict_proba returned shape {p.shape} for {len(X)} inputs")
    return p


def late_layer(model: Any, X: np.ndarray) -> np.ndarray:
    """The model's last hidden layer when it has one (MLP ``features``), else its logits, else
    log-probabilities: the "late-layer activations" detectors such as SafetyNet and KD read."""
    if isinstance(model, SklearnModel):
        return model.features(X) if model._is_mlp() else model.logits(X)
    if hasattr(model, "features"):
        return np.asarray(model.features(X), dtype=np.float64).reshape(len(X), -1)
    if hasattr(model, "logits"):
        return np.asarray(model.logits(X), dtype=np.float64)
    return np.log(np.clip(probabilities(model, X), 1e-12, 1.0))


def model_logits(model: Any, X: np.ndarray) -> np.ndarray:
    """``model.logits(X)`` when available, else log-probabilities (logits up to a constant per row)."""
    if hasattr(model, "logits"):
        return np.asarray(model.logits(X), dtype=np.float64)
    return np.log(np.clip(probabilities(model, X), 1e-12, 1.0))


def image_shape_for(n_features: int, image_shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """``image_shape`` checked against ``n_features``, or the square shape a flat image implies."""
    if image_shape is not None:
        h, w = (int(v) for v in image_shape)
        if h * w != n_features:
            raise ValueError(f"image_shape {image_shape} does not hold {n_features} features")
        return h, w
    side = int(round(np.sqrt(n_features)))
    if side * side != n_features:
        raise ValueError(f"{n_features} features are not a square image: pass image_shape=(height, width)")
    return side, side


def make_classifier(hidden: tuple[int, ...] = (64,), *, random_state: int = 0) -> Any:
    """The default small learned detector: a scikit-learn MLP on standardised inputs."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), MLPClassifier(hidden, max_iter=600, alpha=1e-3,
                                                         random_state=random_state))


def fit_clean_vs_adversarial(classifier: Any, clean: np.ndarray, adversarial: np.ndarray) -> Any:
    """Fit a binary classifier on clean (0) vs adversarial (1) rows, convergence warnings silenced."""
    import warnings

    from sklearn.base import clone

    Z = np.vstack([clean, adversarial])
    t = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    clf = clone(classifier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(Z, t)
    return clf


def positive_score(classifier: Any, Z: np.ndarray) -> np.ndarray:
    """Score of class 1 (adversarial): ``decision_function`` if present, else ``predict_proba[:, 1]``."""
    if hasattr(classifier, "decision_function"):
        try:
            return np.asarray(classifier.decision_function(Z), dtype=np.float64).reshape(-1)
        except AttributeError:
            pass
    return np.asarray(classifier.predict_proba(Z), dtype=np.float64)[:, 1]
