"""TOP: backdoor detection via transferability of perturbation (Huster & Ekwedike, "TOP: Backdoor
Detection in Neural Networks via Transferability of Perturbation", arXiv:2103.10274, 2021; seed ref 23).

An adversarial perturbation computed on one clean image transfers to other images far more often
on a backdoored model than on a clean one: the attack finds the trigger, which works on every image.
For every candidate target class ``t``, a targeted L-infinity PGD attack (``steps`` steps, budget
``eps``, input gradient of ``log p_t``) runs on ``n_sources`` clean inputs not already assigned to
``t``, and each perturbation is added to ``n_targets`` other such inputs. The transfer rate of
``t`` (share of pairs sent to ``t``, divided by the attack's own success rate, so that classes easy
to reach at this budget do not look like transfer) is compared with the same rate on reference
MLPs distilled from the suspect's labels on k-NN-consistent clean inputs
(:func:`kizashi.detectors.models.distilled_reference`, shared with ``b3d``). Score of a class:
``(rate + 0.02) / (reference rate + 0.02)``; suspicious when the largest exceeds ``threshold``.

Deviations: the paper feeds mean transfer rates to a classifier trained on many TrojAI models; a
single model has no such population, hence the references (comparing classes with each other
failed on digits, where some clean classes transfer perturbations as much as a 4-pixel trigger).
White-box (input gradients), no black-box variant. Seeded and deterministic. Measured scores and
the margin of the threshold: docs/detectors.md.

Adapters: models with input gradients: SklearnModel (MLP, linear), TorchModel, ArtModel with gradients; not OnnxModel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ModelDetector, Need, Needs, Report, register
from .models import distilled_reference, provides


@register("top")
class TOP(ModelDetector):
    method = "huster2021-top"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED,
                  gradients=Need.REQUIRED)

    def __init__(self, eps: float = 0.25, steps: int = 20, n_sources: int = 100, n_targets: int = 200,
                 threshold: float = 2.2, n_references: int = 3, n_neighbors: int = 5, random_state: int = 0):
        self.eps = eps
        self.steps = steps
        self.n_sources = n_sources
        self.n_targets = n_targets
        self.threshold = threshold
        self.n_references = n_references
        self.n_neighbors = n_neighbors
        self.random_state = random_state

    def _pgd(self, m: Any, X: np.ndarray, target: int) -> np.ndarray:
        """Targeted L-inf PGD raising ``log p_target``; returns the perturbations."""
        d = np.zeros_like(X)
        step = 2.5 * self.eps / self.steps
        for _ in range(self.steps):
            g = m.class_gradient(np.clip(X + d, 0.0, 1.0), target)
            d = np.clip(d + step * np.sign(g), -self.eps, self.eps)
            d = np.clip(X + d, 0.0, 1.0) - X
        return d

    def _transfer_rates(self, m: Any, X: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pred = m.predict(X)
        rates = np.zeros(m.n_classes)
        success = np.zeros(m.n_classes)
        for t in range(m.n_classes):
            others = np.flatnonzero(pred != m.classes_[t])
            if len(others) < 2:
                continue
            src = rng.choice(others, min(self.n_sources, len(others)), replace=False)
            dst = rng.choice(others, min(self.n_targets, len(others)), replace=False)
            d = self._pgd(m, X[src], t)
            success[t] = np.mean(m.predict(np.clip(X[src] + d, 0.0, 1.0)) == m.classes_[t])
            moved = np.clip(X[dst][None, :, :] + d[:, None, :], 0.0, 1.0).reshape(-1, X.shape[1])
            hit = (m.predict(moved) == m.classes_[t]).reshape(len(src), len(dst))
            pair = src[:, None] != dst[None, :]  # an image's own perturbation is not a transfer
            rates[t] = hit[pair].mean() / max(success[t], 0.05)
        return rates, success

    def _inspect_model(self, m: Any, X: np.ndarray) -> Report:
        if not provides(m, "gradients"):
            raise ValueError("top needs a model with input gradients (a scikit-learn MLP or linear model)")
        rates, success = self._transfer_rates(m, X, np.random.default_rng(self.random_state))
        refs = np.full((max(1, self.n_references), len(rates)), np.nan)
        for k in range(len(refs)):  # a reference knows only the suspect's columns it saw (its classes_)
            ref = distilled_reference(m, X, seed=self.random_state + k, n_neighbors=self.n_neighbors)
            refs[k, np.asarray(ref.classes_, dtype=int)] = self._transfer_rates(
                ref, X, np.random.default_rng(self.random_state))[0]
        with np.errstate(all="ignore"):
            reference = np.nanmedian(refs, axis=0)
        # how many times more the suspect's perturbations transfer; classes no reference knows: not judged
        anomaly = np.where(np.isfinite(reference), (rates + 0.02) / (reference + 0.02), 0.0)
        t = int(np.argmax(anomaly))
        score = float(anomaly[t])
        suspicious = score > self.threshold
        target = m.classes_[t].item() if hasattr(m.classes_[t], "item") else m.classes_[t]
        return Report(detector=self.name, scores=anomaly, flagged=np.array([], dtype=int), subject="model",
                      target_class=int(target) if suspicious else None, suspicious=bool(suspicious),
                      score=score, threshold=float(self.threshold),
                      details={"transfer_rate": round(float(rates[t]), 3),
                               "reference_transfer_rate": round(float(reference[t]), 3),
                               "median_transfer_rate": round(float(np.median(rates)), 3),
                               "attack_success": round(float(success[t]), 3), "candidate_class": int(target)})
