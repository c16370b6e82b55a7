"""B3D: black-box backdoor detection (Dong, Yang, Deng, Pang, Xiao, Zhu, Zhu, "Black-box Detection
of Backdoor Attacks with Limited Information and Data", ICCV 2021; seed ref 22).

For every candidate target class ``t`` the detector reverse-engineers the smallest trigger -- a
mask ``m`` and a pattern ``p`` in ``[0, 1]``, stamped as ``(1 - m) * x + m * p`` -- that sends a
few clean inputs of the other classes to ``t``, minimising ``cross_entropy(t) + lam * |m|_1``. A
backdoored model has one class whose trigger is far smaller than it should be.

Optimiser (``gradient``): ``"nes"`` is the paper's black-box setting (the gradient is estimated
from sampled triggers and the output probabilities alone, so any ``predict_proba`` model can be
scanned); ``"exact"`` uses the model's input gradient (as Neural Cleanse does; scikit-learn MLPs
and linear models); ``"auto"`` picks ``"exact"`` when the model has it. ``lam=None`` and
``threshold=None`` take the defaults of the optimiser used (exact 0.7 and 1.8, nes 0.1 and 1.65).

Deviation: instead of the paper's anomaly index across classes (on 8x8 digits, clean classes
such as "1" have natural triggers as small as a 4-pixel patch), each class's trigger norm is
compared with the same class's norm on reference MLPs distilled from the suspect's labels on
k-NN-consistent clean inputs (:func:`kizashi.detectors.models.distilled_reference`); the score is
the largest ratio ``reference_norm / suspect_norm``. Seeded and deterministic. Measured scores,
the choice of ``lam`` and the optimisers' separation: docs/detectors.md.

Adapters: any model with probabilities (NES, black-box: OnnxModel); exact gradients from SklearnModel, TorchModel, ArtModel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ModelDetector, Need, Needs, Report, register
from .models import distilled_reference, provides


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


class _Adam:
    """Adam (Kingma & Ba 2015) over a list of parameter vectors."""

    def __init__(self, n: int, d: int, lr: float):
        self.lr = lr
        self.mom = [np.zeros(d) for _ in range(n)]
        self.vel = [np.zeros(d) for _ in range(n)]

    def step(self, t: int, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            self.mom[i] = 0.9 * self.mom[i] + 0.1 * g
            self.vel[i] = 0.999 * self.vel[i] + 0.001 * g ** 2
            mh, vh = self.mom[i] / (1 - 0.9 ** t), self.vel[i] / (1 - 0.999 ** t)
            out.append(p - self.lr * mh / (np.sqrt(vh) + 1e-8))
        return out


@register("b3d")
class B3D(ModelDetector):
    method = "dong2021-b3d"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED,
                  gradients=Need.OPTIONAL)

    def __init__(self, lam: float | None = None, steps: int = 200, lr: float = 0.1, n_samples: int = 100,
                 threshold: float | None = None, gradient: str = "auto", nes_samples: int = 20, nes_sigma: float = 1.0,
                 n_references: int = 3, n_neighbors: int = 5, random_state: int = 0):
        self.lam = lam
        self.steps = steps
        self.lr = lr
        self.n_samples = n_samples
        self.threshold = threshold
        self.gradient = gradient
        self.nes_samples = nes_samples
        self.nes_sigma = nes_sigma
        self.n_references = n_references
        self.n_neighbors = n_neighbors
        self.random_state = random_state

    def _reverse_trigger(self, m: Any, X: np.ndarray, target: int, rng: np.random.Generator) -> tuple[float, float]:
        """Adam on (mask logits, pattern logits); returns (L1 norm of the mask, attack success).

        ``gradient="nes"``: the gradient of the expected loss under the trigger distribution (mask
        pixels ~ Bernoulli(sigmoid(a)), pattern = sigmoid(b + sigma * noise)) is estimated from
        ``nes_samples`` sampled triggers and the model's probabilities only (score-function / NES
        estimator with a mean baseline). ``gradient="exact"``: the input gradient of the loss.
        """
        d = X.shape[1]
        a = rng.normal(0.0, 0.1, d) - 2.0  # mask starts small
        b = rng.normal(0.0, 0.1, d)
        adam = _Adam(2, d, self.lr)
        y_t = np.full(len(X), target)
        for step in range(1, self.steps + 1):
            mask, pat = _sigmoid(a), _sigmoid(b)
            if not self._exact:
                g_mask, g_pat = self._nes_gradient(m, X, target, a, b, rng)
            else:
                Xs = (1 - mask) * X + mask * pat
                g = m.loss_gradient(Xs, y_t) / len(X)  # d mean CE / d x'
                g_mask = (g * (pat - X)).sum(axis=0) * mask * (1 - mask)
                g_pat = (g * mask).sum(axis=0) * pat * (1 - pat)
            g_mask = g_mask + self._lam * mask * (1 - mask)  # d (lam * |sigmoid(a)|_1) / d a
            a, b = adam.step(step, [a, b], [g_mask, g_pat])
        mask, pat = _sigmoid(a), _sigmoid(b)
        pred = np.asarray(m.predict_proba((1 - mask) * X + mask * pat)).argmax(axis=1)
        return float(mask.sum()), float(np.mean(pred == target))

    def _nes_gradient(self, m: Any, X: np.ndarray, target: int, a: np.ndarray, b: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Score-function estimate of d E[mean CE(target)] / d (a, b) from output probabilities only."""
        k, n, d = self.nes_samples, len(X), X.shape[1]
        theta = _sigmoid(a)
        masks = (rng.random((k, d)) < theta).astype(np.float64)
        noise = rng.normal(0.0, 1.0, (k, d))
        pats = _sigmoid(b + self.nes_sigma * noise)
        stamped = (1 - masks[:, None, :]) * X[None] + (masks * pats)[:, None, :]
        p = np.asarray(m.predict_proba(stamped.reshape(k * n, d)), dtype=np.float64)[:, target]
        loss = -np.log(np.clip(p, 1e-12, 1.0)).reshape(k, n).mean(axis=1)
        adv = (loss - loss.mean())[:, None]
        return (adv * (masks - theta)).mean(axis=0), (adv * noise).mean(axis=0) / self.nes_sigma

    def _class_norms(self, m: Any, X: np.ndarray, rng: np.random.Generator,
                     n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Trigger norm and success per class, over ``n_classes`` columns: a reference model knows
        only the classes in its ``classes_`` (the others stay NaN: not judged)."""
        proba = np.asarray(m.predict_proba(X))
        pred = proba.argmax(axis=1)
        width = n_classes or proba.shape[1]
        cols = np.arange(proba.shape[1]) if n_classes is None else np.asarray(m.classes_, dtype=int)
        norms = np.full(width, np.nan)
        success = np.zeros(width)
        for t in range(proba.shape[1]):
            others = X[pred != t]
            if len(others):
                norms[cols[t]], success[cols[t]] = self._reverse_trigger(m, others, t, rng)
        return norms, success

    def _inspect_model(self, m: Any, X: np.ndarray) -> Report:
        if self.gradient not in ("auto", "nes", "exact"):
            raise ValueError(f"gradient must be 'auto', 'nes' (black-box, probabilities only) or 'exact', "
                             f"got {self.gradient!r}")
        if self.gradient == "exact" and not provides(m, "gradients"):
            raise ValueError("b3d gradient='exact' needs a model with input gradients (a scikit-learn MLP or "
                             "linear model); use gradient='nes' for a black-box model")
        self._exact = self.gradient == "exact" or (self.gradient == "auto" and provides(m, "gradients"))
        self._lam = self.lam if self.lam is not None else (0.7 if self._exact else 0.1)
        rng = np.random.default_rng(self.random_state)
        X_all = X
        if len(X) > self.n_samples:
            X = X[np.sort(rng.choice(len(X), self.n_samples, replace=False))]
        norms, success = self._class_norms(m, X, rng)
        refs = [self._class_norms(distilled_reference(m, X_all, seed=self.random_state + k, n_neighbors=self.n_neighbors),
                                  X, np.random.default_rng(self.random_state + k), n_classes=len(norms))[0]
                for k in range(max(1, self.n_references))]
        with np.errstate(all="ignore"):
            ref_norms = np.nanmedian(np.array(refs), axis=0) if np.isfinite(refs).any() else np.full(len(norms), np.nan)
            anomaly = ref_norms / norms  # how many times smaller the suspect's trigger is than the reference's
        judged = np.isfinite(anomaly)
        if judged.sum() < 2:
            raise ValueError(f"b3d could compare only {int(judged.sum())} class(es): the clean inputs must include "
                             "images the model assigns to at least two classes, each with images of other classes "
                             "to stamp (a few per class suffice)")
        anomaly = np.where(judged, anomaly, 0.0)  # a class the clean inputs never show is not judged
        t = int(np.argmax(anomaly))
        score = float(anomaly[t])
        threshold = self.threshold if self.threshold is not None else (1.8 if self._exact else 1.65)
        suspicious = score > threshold
        classes = getattr(m, "classes_", None)
        target = classes[t] if classes is not None else t
        target = target.item() if hasattr(target, "item") else target
        return Report(detector=self.name, scores=anomaly, flagged=np.array([], dtype=int), subject="model",
                      target_class=int(target) if suspicious else None, suspicious=bool(suspicious),
                      score=score, threshold=float(threshold),
                      details={"min_mask_l1": round(float(norms[t]), 3),
                               "reference_mask_l1": round(float(ref_norms[t]), 3),
                               "trigger_success": round(float(success[t]), 3), "candidate_class": int(target),
                               "classes_judged": int(judged.sum()),
                               "optimiser": "exact" if self._exact else "nes"})
