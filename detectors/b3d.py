"""B3D: black-box backdoor detection (Dong, Yang, Deng, Pang, Xiao, Zhu, Zhu, "Black-box Detection
of Backdoor Attacks with Limited Information and Data", ICCV 2021).

For every candidate target class ``t`` the detector reverse-engineers the smallest trigger -- a
mask ``m`` and a pattern ``p`` in ``[0, 1]``, stamped as ``(1 - m) * x + m * p`` -- that sends a
few clean inputs of the other classes to ``t``, minimising ``cross_entropy(t) + lam * |m|_1``. A
backdoored model has one class whose trigger is far smaller than it should be.

Deviation: the paper compares mask norms across classes with a MAD anomaly index. On 8x8 digits
clean classes such as "1" have natural triggers as small as a 4-pixel BadNets patch, so that index
does not separate clean from backdoored MLPs. Here each class's norm is compared with the same
class's norm on a *reference* model distilled from the suspect's own labels on the clean inputs
(clean inputs never carry the trigger, so the reference learns the clean behaviour only); the
score is the largest ratio ``reference_norm / suspect_norm``, flagged above ``threshold``.

Simplification: B3D estimates the gradient of that objective from queries alone (natural evolution
strategies over a Bernoulli mask distribution); for a model whose input gradient is available
(``SklearnModel.logit_vjp``, scikit-learn MLPs / linear models) this implementation uses the exact
gradient with Adam instead, which is the paper's white-box variant (B3D-W) optimising the same
objective. Seeded (the initial mask/pattern and the clean subset) and deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DataDetector, Report, check_array, register
from .models import require_model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


@register("b3d")
class B3D(DataDetector):
    method = "dong2021-b3d"

    def __init__(self, lam: float = 0.1, steps: int = 200, lr: float = 0.1, n_samples: int = 100,
                 threshold: float = 1.75, random_state: int = 0):
        self.lam = lam
        self.steps = steps
        self.lr = lr
        self.n_samples = n_samples
        self.threshold = threshold
        self.random_state = random_state

    def _reverse_trigger(self, m: Any, X: np.ndarray, target: int, rng: np.random.Generator) -> tuple[float, float]:
        """Adam on (mask logits, pattern logits); returns (L1 norm of the mask, attack success)."""
        d = X.shape[1]
        a = rng.normal(0.0, 0.1, d) - 2.0  # mask starts small
        b = rng.normal(0.0, 0.1, d)
        params = [a, b]
        mom = [np.zeros(d), np.zeros(d)]
        vel = [np.zeros(d), np.zeros(d)]
        y_t = np.full(len(X), target)
        for step in range(1, self.steps + 1):
            mask, pat = _sigmoid(a), _sigmoid(b)
            Xs = (1 - mask) * X + mask * pat
            g = m.loss_gradient(Xs, y_t) / len(X)  # d mean CE / d x'
            g_mask = (g * (pat - X)).sum(axis=0) + self.lam
            g_pat = (g * mask).sum(axis=0)
            grads = [g_mask * mask * (1 - mask), g_pat * pat * (1 - pat)]
            for i in range(2):
                mom[i] = 0.9 * mom[i] + 0.1 * grads[i]
                vel[i] = 0.999 * vel[i] + 0.001 * grads[i] ** 2
                mh, vh = mom[i] / (1 - 0.9 ** step), vel[i] / (1 - 0.999 ** step)
                params[i] -= self.lr * mh / (np.sqrt(vh) + 1e-8)
        mask, pat = _sigmoid(a), _sigmoid(b)
        success = float(np.mean(m.predict((1 - mask) * X + mask * pat) == m.classes_[target]))
        return float(mask.sum()), success

    def _class_norms(self, m: Any, X: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pred = m.predict(X)
        norms = np.full(m.n_classes, np.inf)
        success = np.zeros(m.n_classes)
        for t in range(m.n_classes):
            others = X[pred != m.classes_[t]]
            if len(others):
                norms[t], success[t] = self._reverse_trigger(m, others, t, rng)
        return norms, success

    def _reference(self, m: Any, X: np.ndarray) -> Any:
        """A backdoor-free stand-in: an MLP distilled from the suspect's labels on the clean inputs."""
        import warnings

        from sklearn.neural_network import MLPClassifier

        from .models import as_model

        hidden = tuple(w.shape[1] for w in getattr(m.estimator, "coefs_", [])[:-1]) or (64,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = MLPClassifier(hidden, max_iter=300, random_state=self.random_state).fit(X, m.predict(X))
        return as_model(ref)

    def inspect_model(self, model: Any, X_clean: Any) -> Report:
        X = check_array(X_clean, name="X_clean")
        m = require_model(model, "b3d")
        if not hasattr(m, "loss_gradient"):
            raise ValueError("b3d needs a model with input gradients (a scikit-learn MLP or linear model)")
        rng = np.random.default_rng(self.random_state)
        X_all = X
        if len(X) > self.n_samples:
            X = X[np.sort(rng.choice(len(X), self.n_samples, replace=False))]
        reference = self._reference(m, X_all)
        norms, success = self._class_norms(m, X, rng)
        ref_norms, _ = self._class_norms(reference, X, np.random.default_rng(self.random_state))
        anomaly = ref_norms / norms  # how many times smaller the suspect's trigger is than the reference's
        t = int(np.argmax(anomaly))
        score = float(anomaly[t])
        suspicious = score > self.threshold
        target = m.classes_[t].item() if hasattr(m.classes_[t], "item") else m.classes_[t]
        return Report(detector=self.name, scores=anomaly, flagged=np.array([0] if suspicious else [], dtype=int),
                      target_class=int(target) if suspicious else None, suspicious=bool(suspicious),
                      score=score, threshold=float(self.threshold),
                      details={"min_mask_l1": round(float(norms[t]), 3),
                               "reference_mask_l1": round(float(ref_norms[t]), 3),
                               "trigger_success": round(float(success[t]), 3), "candidate_class": int(target)})
