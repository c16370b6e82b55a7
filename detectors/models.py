"""Model adapters: any object with ``predict_proba(X)`` is a model; these add ``features`` (hidden
activations), ``logits`` and input gradients (``loss_gradient``, ``class_gradient``), so detectors
need no framework. Detectors ask the adapter for these outputs (the names in :data:`OUTPUTS`, as
in a detector's ``needs``); an adapter declares what it can give in ``provides``, read by
:func:`provides`.

* :class:`SklearnModel`: fitted scikit-learn classifiers (numpy gradients for MLPs/linear models).
* :class:`TorchModel`: a PyTorch ``nn.Module`` (autograd gradients, hooked hidden layer).
* :class:`OnnxModel`: an ONNX file or bytes through onnxruntime (no gradients: black-box only).
* :class:`ArtModel`: any adversarial-robustness-toolbox classifier a user already has.

Detectors always pass flat 2-D arrays (one row per input); adapters of image models reshape
rows to the model's ``input_shape``.
"""

from __future__ import annotations

import logging
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


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def _labels_of(y: Any, n: int) -> np.ndarray:
    """Class indices from labels, one-hot rows or one label for all ``n`` rows."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.argmax(axis=1).astype(int)
    return np.broadcast_to(y.astype(int), (n,)).copy()


class _ImageAdapter:
    """Shared parts of the adapters of framework models: reshaping flat rows to ``input_shape``,
    ``predict`` and ``n_classes`` from the output width."""

    input_shape: tuple[int, ...] | None
    classes_: np.ndarray | None = None

    def _shaped(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.input_shape is None:
            return X
        return X.reshape((len(X), *self.input_shape))

    def predict(self, X: Any) -> np.ndarray:
        idx = self.predict_proba(X).argmax(axis=1)
        return self.classes_[idx] if self.classes_ is not None else idx

    @property
    def n_classes(self) -> int:
        if self.classes_ is None:
            raise AttributeError(f"{type(self).__name__} learns n_classes from its first prediction")
        return len(self.classes_)

    def predict_proba(self, X: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TorchModel(_ImageAdapter):
    """Adapter for a PyTorch classifier ``module`` whose output is logits (no final softmax).

    ``input_shape`` (e.g. ``(1, 28, 28)``): the shape of one input, flat rows are reshaped to it.
    ``layer``: name (as in ``module.named_modules()``) of the layer whose output ``features`` returns;
    default the input of the last ``nn.Linear`` (the penultimate representation). Gradients come
    from autograd; evaluation runs in ``eval()`` mode, CPU, ``batch_size`` rows at a time, float32.
    """

    provides = frozenset({"probabilities", "logits", "activations", "gradients"})

    def __init__(self, module: Any, *, input_shape: tuple[int, ...] | None = None, layer: str | None = None,
                 batch_size: int = 512, n_classes: int | None = None):
        if not _is_torch_module(module):
            raise TypeError(f"TorchModel needs a torch.nn.Module; got {type(module).__name__}")
        self.module = module.eval()
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.layer = layer
        self.batch_size = int(batch_size)
        if n_classes is not None:
            self.classes_ = np.arange(int(n_classes))
        names = dict(module.named_modules())
        if layer is not None and layer not in names:
            raise ValueError(f"module has no layer {layer!r}; layers: {[n for n in names if n][:20]}")

    def _batches(self, X: Any):
        import torch

        X = self._shaped(X)
        for i in range(0, len(X), self.batch_size):
            yield torch.from_numpy(np.ascontiguousarray(X[i:i + self.batch_size]))

    def logits(self, X: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = np.concatenate([self.module(b).double().numpy() for b in self._batches(X)])
        if self.classes_ is None:
            self.classes_ = np.arange(out.shape[1])
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        return _softmax(self.logits(X))

    def _feature_layer(self) -> tuple[Any, bool]:
        """(module to hook, whether to take its input rather than its output)."""
        import torch

        if self.layer is not None:
            return dict(self.module.named_modules())[self.layer], False
        linears = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise TypeError("the module has no nn.Linear layer: name the feature layer with layer=...")
        return linears[-1], True

    def output_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` of the last linear layer, as ``logits = features @ W + b`` when ``layer`` is
        the default (Monte-Carlo dropout on the features, as ``kd_bu`` does)."""
        import torch

        last = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)][-1]
        return last.weight.detach().double().numpy().T, last.bias.detach().double().numpy()

    def features(self, X: Any) -> np.ndarray:
        """Activations of ``layer`` (default: the input of the last linear layer), flattened per row."""
        import torch

        target, take_input = self._feature_layer()
        got: list[np.ndarray] = []

        def hook(_m, inp, out):
            t = inp[0] if take_input else out
            got.append(t.detach().double().reshape(len(t), -1).numpy())

        handle = target.register_forward_hook(hook)
        try:
            with torch.no_grad():
                for b in self._batches(X):
                    self.module(b)
        finally:
            handle.remove()
        return np.concatenate(got)

    def _input_gradient(self, X: Any, objective: Any) -> np.ndarray:
        """Gradient w.r.t. each input row of the scalar ``objective(logits, first_row)`` (autograd), flat."""
        import torch

        out, start = [], 0
        for b in self._batches(X):
            b = b.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(objective(self.module(b), start), b)
            out.append(g.double().reshape(len(b), -1).numpy())
            start += len(b)
        return np.concatenate(out)

    def loss_gradient(self, X: Any, y: Any) -> np.ndarray:
        """Gradient of the summed cross-entropy against labels ``y`` (indices or one-hot) w.r.t. ``X``."""
        import torch

        labels = torch.from_numpy(_labels_of(y, len(X)))

        def loss(z, start):
            return torch.nn.functional.cross_entropy(z, labels[start:start + len(z)], reduction="sum")

        return self._input_gradient(X, loss)

    def class_gradient(self, X: Any, label: Any) -> np.ndarray:
        """Gradient of ``log softmax(logits)[label]`` w.r.t. ``X`` (one label per row, or one for all)."""
        import torch

        labels = torch.from_numpy(_labels_of(label, len(X)))

        def logp(z, start):
            lab = labels[start:start + len(z)]
            return torch.log_softmax(z, dim=1)[torch.arange(len(z)), lab].sum()

        return self._input_gradient(X, logp)


class OnnxModel(_ImageAdapter):
    """Adapter for an ONNX classifier (a path or the model's bytes) run by onnxruntime on CPU.

    ``output``: the graph output holding the class scores (default the first); ``output_is``:
    ``"logits"`` (default) or ``"probabilities"``. ``features_output``: the name of any tensor of
    the graph (an output or an intermediate one, exposed by adding it to the graph's outputs) whose
    value ``features`` returns. No input gradients: detectors that need them refuse an OnnxModel
    (``provides``), and those that can fall back use their documented black-box estimate.
    """

    def __init__(self, path_or_bytes: Any, *, input_shape: tuple[int, ...] | None = None, output: str | None = None,
                 output_is: str = "logits", features_output: str | None = None, batch_size: int = 512):
        import onnx
        import onnxruntime as ort

        if output_is not in ("logits", "probabilities"):
            raise ValueError(f"output_is must be 'logits' or 'probabilities', got {output_is!r}")
        raw = path_or_bytes if isinstance(path_or_bytes, bytes | bytearray) else open(path_or_bytes, "rb").read()
        graph = onnx.load_from_string(bytes(raw))
        outputs = [o.name for o in graph.graph.output]
        self.output = output or outputs[0]
        if self.output not in outputs:
            raise ValueError(f"the ONNX graph has no output {self.output!r}; outputs: {outputs}")
        self.features_output = features_output
        if features_output is not None and features_output not in outputs:
            inferred = onnx.shape_inference.infer_shapes(graph)
            info = [v for v in inferred.graph.value_info if v.name == features_output]
            if not info:
                raise ValueError(f"the ONNX graph has no tensor {features_output!r}")
            graph.graph.output.append(info[0])
            raw = graph.SerializeToString()
        self.output_is = output_is
        self.batch_size = int(batch_size)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(bytes(raw), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = inp.shape[1:]
        if input_shape is None and all(isinstance(d, int) for d in dims):
            input_shape = tuple(dims)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        out = {"probabilities"} | ({"logits"} if output_is == "logits" else set())
        self.provides = frozenset(out | ({"activations"} if features_output else set()))

    def _run(self, X: Any, name: str) -> np.ndarray:
        X = self._shaped(X)
        parts = [self.session.run([name], {self.input_name: X[i:i + self.batch_size]})[0]
                 for i in range(0, len(X), self.batch_size)]
        out = np.concatenate(parts).astype(np.float64)
        return out.reshape(len(out), -1)

    def _scores(self, X: Any) -> np.ndarray:
        out = self._run(X, self.output)
        if self.classes_ is None:
            self.classes_ = np.arange(out.shape[1])
        return out

    def logits(self, X: Any) -> np.ndarray:
        if self.output_is != "logits":
            raise TypeError("this ONNX model outputs probabilities, not logits")
        return self._scores(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        s = self._scores(X)
        return _softmax(s) if self.output_is == "logits" else s

    def features(self, X: Any) -> np.ndarray:
        if self.features_output is None:
            raise TypeError("name the hidden tensor with OnnxModel(..., features_output=...)")
        return self._run(X, self.features_output)


class ArtModel(_ImageAdapter):
    """Adapter for an adversarial-robustness-toolbox classifier (``PyTorchClassifier``,
    ``ScikitlearnClassifier``, ...), for users who already wrap their model for ART.

    ``predict_gives``: what ``classifier.predict`` returns, ``"probabilities"`` or ``"logits"``
    (default: probabilities for ART's scikit-learn wrappers, logits for the others, which return
    the framework model's raw output). Gradients when the classifier has ART's gradient mixins
    (ART's ``loss_gradient``; ``class_gradient`` of log-softmax from ART's logit gradients);
    ``features`` from ``get_activations(layer)`` when ``layer`` is given.
    """

    def __init__(self, classifier: Any, *, predict_gives: str | None = None, layer: int | str | None = None,
                 batch_size: int = 512):
        from art.estimators.classification.classifier import ClassGradientsMixin
        from art.estimators.estimator import LossGradientsMixin

        self.classifier = classifier
        if predict_gives is None:
            predict_gives = "probabilities" if "scikitlearn" in type(classifier).__module__ else "logits"
        if predict_gives not in ("probabilities", "logits"):
            raise ValueError(f"predict_gives must be 'probabilities' or 'logits', got {predict_gives!r}")
        self.predict_gives = predict_gives
        self.layer = layer
        self.batch_size = int(batch_size)
        shape = getattr(classifier, "input_shape", None)
        self.input_shape = tuple(shape) if shape else None
        nb = getattr(classifier, "nb_classes", None)
        self.classes_ = np.arange(int(nb)) if nb else None
        out = {"probabilities"}
        if predict_gives == "logits":
            out.add("logits")
        self._loss_grad = isinstance(classifier, LossGradientsMixin)
        self._class_grad = isinstance(classifier, ClassGradientsMixin) and predict_gives == "logits"
        if self._loss_grad and self._class_grad:
            out.add("gradients")
        if layer is not None and hasattr(classifier, "get_activations"):
            out.add("activations")
        self.provides = frozenset(out)

    def _out(self, X: Any) -> np.ndarray:
        return np.asarray(self.classifier.predict(self._shaped(X), batch_size=self.batch_size), dtype=np.float64)

    def logits(self, X: Any) -> np.ndarray:
        if self.predict_gives != "logits":
            raise TypeError("this ART classifier predicts probabilities, not logits")
        return self._out(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        out = self._out(X)
        return _softmax(out) if self.predict_gives == "logits" else out

    def features(self, X: Any) -> np.ndarray:
        if "activations" not in self.provides:
            raise TypeError("name the layer with ArtModel(classifier, layer=...)")
        a = self.classifier.get_activations(self._shaped(X), self.layer, batch_size=self.batch_size)
        return np.asarray(a, dtype=np.float64).reshape(len(X), -1)

    def loss_gradient(self, X: Any, y: Any) -> np.ndarray:
        """ART's loss gradient, as the classifier's loss defines it (a mean-reduced PyTorch loss
        divides each row's gradient by the batch size)."""
        if not self._loss_grad:
            raise TypeError(f"{type(self.classifier).__name__} has no loss gradient")
        onehot = np.eye(self.n_classes)[_labels_of(y, len(X))]
        g = self.classifier.loss_gradient(self._shaped(X), onehot)
        return np.asarray(g, dtype=np.float64).reshape(len(X), -1)

    def class_gradient(self, X: Any, label: Any) -> np.ndarray:
        """Gradient of ``log softmax(logits)[label]``: ART's logit gradients minus their
        probability-weighted mean (the chain rule of log-softmax)."""
        if not self._class_grad:
            raise TypeError(f"{type(self.classifier).__name__} gives no logit gradients")
        labels = _labels_of(label, len(X))
        Xs = self._shaped(X)
        G = np.asarray(self.classifier.class_gradient(Xs), dtype=np.float64).reshape(len(X), self.n_classes, -1)
        p = self.predict_proba(X)
        return G[np.arange(len(X)), labels] - np.einsum("nk,nkd->nd", p, G)


def as_model(model: Any) -> Any:
    """Wrap scikit-learn estimators in :class:`SklearnModel` and ART classifiers in :class:`ArtModel`;
    pass adapters and other models with ``predict_proba`` through unchanged."""
    if model is None or isinstance(model, SklearnModel | TorchModel | OnnxModel | ArtModel):
        return model
    mod = type(model).__module__
    if mod.startswith("sklearn.") or hasattr(model, "coefs_"):
        return SklearnModel(model)
    if mod.startswith("art."):
        return ArtModel(model)
    if _is_torch_module(model):
        raise TypeError("wrap a PyTorch module as TorchModel(module, input_shape=...) so rows can be reshaped")
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
    left out (except where that would drop a whole class). The reference's ``classes_`` are the
    suspect's output columns it saw; a class the suspect never predicts on ``X`` is missing from it.
    Same hidden layers as the suspect when it is an MLP, else (64,); single-threaded BLAS. Used by
    the model detectors ``b3d`` and ``top``.
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
        lost = np.setdiff1d(labels, labels[keep])  # few images per class: keep a class rather than drop it
        keep |= np.isin(labels, lost)
    if len(np.unique(labels)) < 2:
        raise ValueError("the model assigns every clean input to one class: a reference needs at least two")
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
    if provides(model, "activations"):
        return np.asarray(model.features(X), dtype=np.float64).reshape(len(X), -1)
    return model_logits(model, X)


def model_logits(model: Any, X: np.ndarray) -> np.ndarray:
    """``model.logits(X)`` when available, else log-probabilities (logits up to a constant per row)."""
    if provides(model, "logits"):
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


# -- adversarial examples a supervised detector crafts for itself ---------------------------------------

#: the attacks :func:`craft_adversarial` runs, documented where detectors cite them
CRAFTING = {
    "white-box": "ART ProjectedGradientDescent, L-inf, eps=craft_eps, step eps/4, 10 iterations, no random start",
    "black-box": "ART HopSkipJump, untargeted L2, max_iter=5, max_eval=100, init_eval=10, seeded start",
}


def _art_estimator(model: Any, n_features: int, n_classes: int, clip: tuple[float, float]) -> Any:
    """An ART classifier over flat rows for any adapter: the user's own for :class:`ArtModel`, one
    with the adapter's input gradients when it provides them, a black-box one otherwise."""
    from art.estimators.classification import BlackBoxClassifier
    from art.estimators.classification.classifier import ClassGradientsMixin
    from art.estimators.estimator import LossGradientsMixin

    if not provides(model, "gradients"):
        return BlackBoxClassifier(lambda x: probabilities(model, x.reshape(len(x), -1)), (n_features,), n_classes,
                                  clip_values=clip)

    class _AdapterWithGradients(ClassGradientsMixin, LossGradientsMixin, BlackBoxClassifier):
        def loss_gradient(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> np.ndarray:
            return np.asarray(model.loss_gradient(x.reshape(len(x), -1), y), dtype=np.float64).reshape(x.shape)

        def class_gradient(self, x: np.ndarray, label: Any = None, **kwargs: Any) -> np.ndarray:
            x2 = x.reshape(len(x), -1)
            g = [model.class_gradient(x2, k) for k in (range(n_classes) if label is None else [label])]
            return np.stack(g, axis=1).reshape((len(x), len(g), *x.shape[1:]))

    return _AdapterWithGradients(lambda x: probabilities(model, x.reshape(len(x), -1)), (n_features,), n_classes,
                                 clip_values=clip)


def craft_adversarial(model: Any, X: np.ndarray, y: np.ndarray | None = None, *, eps: float = 0.15,
                      max_samples: int = 200, random_state: int = 0) -> tuple[np.ndarray, str]:
    """Adversarial examples against ``model`` for a detector given clean data only:
    ``(examples, attack)`` with ``attack`` a key of :data:`CRAFTING`.

    Up to ``max_samples`` rows of ``X`` (a seeded draw) are attacked with ART: white-box PGD when
    the adapter provides input gradients, else black-box HopSkipJump (ART draws its start from
    numpy's global generator: it is seeded with ``random_state`` and restored). Targets are ``y``
    when given, else the model's own predictions; pixels are clipped to ``[min(0, X.min()),
    max(1, X.max())]``. The examples that change the model's prediction are returned, or all of
    them when fewer than a tenth do (a robust model still yields perturbed inputs to learn from).
    """
    from .base import check_positive_int

    model = as_model(model)
    rng = np.random.default_rng(random_state)
    n = min(len(X), check_positive_int("max_samples", max_samples))
    rows = np.sort(rng.choice(len(X), size=n, replace=False))
    Xs = np.asarray(X, dtype=np.float32)[rows]
    p = probabilities(model, Xs)
    target = p.argmax(axis=1)
    if y is not None:
        classes, labels = getattr(model, "classes_", None), np.asarray(y)[rows]
        target = np.searchsorted(classes, labels) if classes is not None else labels.astype(int)
    clip = (float(min(0.0, X.min())), float(max(1.0, X.max())))
    onehot = np.eye(p.shape[1], dtype=np.float32)[target]
    for name in ("art", "art.attacks", "art.estimators"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if isinstance(model, ArtModel):
        est, shape = model.classifier, model.input_shape or (X.shape[1],)
    else:
        est, shape = _art_estimator(model, X.shape[1], p.shape[1], clip), (X.shape[1],)
    Xa = Xs.reshape((n, *shape))
    if provides(model, "gradients"):
        from art.attacks.evasion import ProjectedGradientDescent

        attack, kind = ProjectedGradientDescent(est, eps=float(eps), eps_step=float(eps) / 4, max_iter=10,
                                                num_random_init=0, verbose=False), "white-box"
    else:
        from art.attacks.evasion import HopSkipJump

        attack, kind = HopSkipJump(est, max_iter=5, max_eval=100, init_eval=10, init_size=20, verbose=False), "black-box"
    state = np.random.get_state()
    np.random.seed(random_state)
    try:
        adv = np.asarray(attack.generate(Xa, y=onehot), dtype=np.float64).reshape(n, -1)
    finally:
        np.random.set_state(state)
    finite = np.isfinite(adv).all(axis=1)
    changed = finite & (probabilities(model, np.nan_to_num(adv)).argmax(axis=1) != p.argmax(axis=1))
    return adv[changed if changed.sum() >= max(2, n // 10) else finite], kind


def adversarial_or_crafted(detector: Any, X: np.ndarray, y: np.ndarray | None, model: Any,
                           X_adv: np.ndarray | None) -> np.ndarray:
    """``X_adv`` when given; else examples crafted against ``model`` with the detector's
    ``craft_eps``, ``craft_samples`` and ``random_state`` (:func:`craft_adversarial`), recorded in
    the fitted attribute ``crafted_`` (attack and count)."""
    if X_adv is not None:
        detector.crafted_ = None
        return X_adv
    if model is None:
        raise ValueError(f"{detector.name} learns clean vs adversarial: pass model=... (it then crafts its own "
                         "adversarial examples) or X_adv=...")
    adv, kind = craft_adversarial(model, X, y, eps=detector.craft_eps, max_samples=detector.craft_samples,
                                  random_state=detector.random_state)
    detector.crafted_ = {"attack": CRAFTING[kind], "eps": float(detector.craft_eps), "n": int(len(adv))}
    return adv
