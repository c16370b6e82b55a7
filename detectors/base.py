"""The detector protocol: framework-neutral (numpy arrays in, kizashi events out), estimator-shaped.

Style follows scikit-learn: the constructor takes only parameters; ``fit`` learns from benign
reference data and calibrates the threshold for a target false-positive rate; per-input scores come
from ``score``/``decision_function`` (higher = more suspicious) and ``predict`` applies the
threshold. Three families share this base:

* :class:`StreamDetector` watches the query stream per account: ``observe(x, *, account, ...)``.
* :class:`InputDetector` scores each input / output: ``score(X)``, ``detect(X, ...)``.
* :class:`DataDetector` inspects a training set or a trained model: ``inspect``, ``inspect_model``.

A *model* is any object with ``predict_proba(X)``; optionally ``features(X)`` (hidden activations)
and ``logits(X)``. :func:`kizashi.detectors.models.as_model` adapts scikit-learn estimators.
"""

from __future__ import annotations

import copy
import inspect
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
from kizashi.engine.events import DataUsed, DetectionEvent, DetectorInfo, Subject, Target, utcnow
from kizashi.mappings import load_catalogue

__all__ = [
    "REGISTRY",
    "AccountStates",
    "DataDetector",
    "Detector",
    "InputDetector",
    "NotFittedError",
    "Report",
    "StreamDetector",
    "check_array",
    "check_sample",
    "register",
]

REGISTRY: dict[str, type[Detector]] = {}


class NotFittedError(RuntimeError):
    """The detector was used before ``fit``."""


def register(name: str) -> Callable[[type[Detector]], type[Detector]]:
    """Class decorator: add a detector to the registry under ``name``."""

    def deco(cls: type[Detector]) -> type[Detector]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"detector name {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return deco


# -- input validation -----------------------------------------------------------------------------


def check_array(X: Any, *, n_features: int | None = None, name: str = "X", allow_1d: bool = False) -> np.ndarray:
    """Return ``X`` as a finite 2-D float array or raise ``ValueError`` naming the problem."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(1, -1)
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features; the detector was fitted on {n_features}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return arr


def check_sample(x: Any, *, n_features: int | None = None, name: str = "x") -> np.ndarray:
    """One query as a finite 1-D float vector (images are flattened)."""
    arr = np.asarray(x, dtype=np.float64).reshape(-1) if np.ndim(x) > 1 else np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be one sample (a non-empty vector); got shape {np.shape(x)}")
    if n_features is not None and arr.size != n_features:
        raise ValueError(f"{name} has {arr.size} features; the detector was fitted on {n_features}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# -- the base class --------------------------------------------------------------------------------


class Detector:
    """Base of every kizashi detector.

    Subclasses set ``method`` (the catalogue method id they implement) and are registered with
    :func:`register`. Stage, attack family, ATLAS techniques and the Table 1 data marks of the events
    they emit come from the catalogue entry, so events and catalogue never disagree.
    """

    name: ClassVar[str] = "detector"
    method: ClassVar[str | None] = None
    version: ClassVar[str] = "0.1.0"
    #: overrides of the catalogue goal, for detectors serving several (e.g. query_rate)
    stage: ClassVar[str | None] = None
    attack: ClassVar[str | None] = None
    techniques: ClassVar[tuple[str, ...] | None] = None

    # context of emitted events (set with set_context, not constructor parameters)
    _model_id: str | None = None
    _model_version: str | None = None
    _endpoint: str | None = None

    # -- estimator plumbing ------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> Detector:
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; valid: {sorted(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def set_context(self, *, model_id: str | None = None, model_version: str | None = None,
                    endpoint: str | None = None) -> Detector:
        """Name the protected model and endpoint that emitted events refer to."""
        self._model_id, self._model_version, self._endpoint = model_id, model_version, endpoint
        return self

    def _check_fitted(self, *attrs: str) -> None:
        for a in attrs or ("threshold_",):
            if not hasattr(self, a):
                raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")

    # -- catalogue-derived tags --------------------------------------------------------------
    @classmethod
    def catalogue_entry(cls):
        return load_catalogue().get(cls.method) if cls.method else None

    def _goal(self) -> tuple[str, str, list[str], dict[str, str | None]]:
        m = self.catalogue_entry()
        stage = self.stage or (m.stage if m else "symptom")
        attack = self.attack or (m.attack if m else "evasion")
        techniques = list(self.techniques if self.techniques is not None else (m.atlas if m else ()))
        data = dict(m.data) if m else {}
        return stage, attack, techniques, data

    def make_event(
        self,
        score: float,
        *,
        threshold: float | None = None,
        account: str | None = None,
        source_ip: str | None = None,
        session: str | None = None,
        time: datetime | None = None,
        severity: str | None = None,
        evidence: dict[str, Any] | None = None,
        stage: str | None = None,
        attack: str | None = None,
        techniques: Iterable[str] | None = None,
    ) -> DetectionEvent:
        """A :class:`DetectionEvent` tagged from the catalogue entry of this detector."""
        g_stage, g_attack, g_tech, data = self._goal()
        thr = float(threshold) if threshold is not None else getattr(self, "threshold_", None)
        if severity is None:
            severity = _severity(float(score), thr)
        return DetectionEvent(
            time=time or utcnow(),
            detector=DetectorInfo(id=f"kizashi.{self.name}", name=self.name, version=self.version,
                                  method=self.method),
            stage=stage or g_stage,
            attack=attack or g_attack,
            atlas={"techniques": list(techniques) if techniques is not None else g_tech},
            subject=Subject(account=account, source_ip=source_ip, session=session),
            target=Target(model=self._model_id, model_version=self._model_version, endpoint=self._endpoint),
            data_used=DataUsed(**data),
            score=float(score),
            threshold=float(thr) if thr is not None else None,
            severity=severity,
            evidence=evidence or {},
        )


def _severity(score: float, threshold: float | None) -> str:
    """Severity from how far the score is past the threshold (ratio), a simple shared convention."""
    if threshold is None or threshold <= 0:
        return "medium"
    r = score / threshold
    if r >= 4:
        return "critical"
    if r >= 2:
        return "high"
    return "medium"


# -- bounded per-account state ----------------------------------------------------------------------


class AccountStates:
    """Per-account state, bounded: at most ``max_accounts`` kept, least recently used evicted."""

    def __init__(self, factory: Callable[[], Any], max_accounts: int = 10_000):
        if max_accounts < 1:
            raise ValueError("max_accounts must be >= 1")
        self.factory = factory
        self.max_accounts = max_accounts
        self._states: OrderedDict[str, Any] = OrderedDict()
        self.evicted = 0

    def get(self, account: str) -> Any:
        st = self._states.get(account)
        if st is None:
            st = self.factory()
            self._states[account] = st
            if len(self._states) > self.max_accounts:
                self._states.popitem(last=False)
                self.evicted += 1
        else:
            self._states.move_to_end(account)
        return st

    def peek(self, account: str) -> Any | None:
        return self._states.get(account)

    def reset(self, account: str) -> None:
        self._states.pop(account, None)

    def __contains__(self, account: str) -> bool:
        return account in self._states

    def __len__(self) -> int:
        return len(self._states)

    def accounts(self) -> list[str]:
        return list(self._states)

    def items(self):
        return self._states.items()

    def dump(self) -> dict[str, Any]:
        return {"max_accounts": self.max_accounts, "evicted": self.evicted,
                "states": [(k, copy.deepcopy(v)) for k, v in self._states.items()]}

    def load(self, data: dict[str, Any]) -> None:
        self.max_accounts = data["max_accounts"]
        self.evicted = data.get("evicted", 0)
        self._states = OrderedDict(data["states"])


class StreamDetector(Detector):
    """Watches the stream of inference queries, per account.

    Subclasses implement ``fit`` and ``_observe(state, x, prediction, time) -> (score, alarm, evidence)``
    and ``_new_state()``; the base keeps the bounded per-account state and turns alarms into events.
    """

    max_accounts: int = 10_000

    def _states(self) -> AccountStates:
        st = self.__dict__.get("states_")
        if st is None:
            st = AccountStates(self._new_state, max_accounts=int(getattr(self, "max_accounts", 10_000)))
            self.states_ = st
        return st

    def _new_state(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self, state: Any, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, bool, dict]:
        raise NotImplementedError  # pragma: no cover - abstract

    def observe(self, x: Any, *, account: str, time: datetime | None = None, prediction: Any = None,
                source_ip: str | None = None, session: str | None = None) -> list[DetectionEvent]:
        """Feed one query of ``account``; returns the events raised by it (usually none)."""
        self._check_fitted()
        if not account:
            raise ValueError("account must be a non-empty string")
        time = time or utcnow()
        n = getattr(self, "n_features_in_", None)
        xv = check_sample(x, n_features=n) if n is not None else np.asarray(x, dtype=np.float64)
        state = self._states().get(account)
        score, alarm, evidence = self._observe(state, xv, prediction, time)
        if not alarm:
            return []
        return [self.make_event(score, account=account, time=time, source_ip=source_ip, session=session,
                                evidence=evidence)]

    def reset(self, account: str | None = None) -> None:
        """Forget one account's state, or every account's."""
        if account is None:
            self.__dict__.pop("states_", None)
        else:
            self._states().reset(account)

    # -- save / restore -----------------------------------------------------------------------
    def get_state(self) -> bytes:
        """The whole per-account state as bytes (pickle of plain numpy/python data)."""
        return pickle.dumps(self._states().dump(), protocol=pickle.HIGHEST_PROTOCOL)

    def set_state(self, blob: bytes) -> None:
        """Restore what :meth:`get_state` returned (only load state you saved yourself)."""
        self._states().load(pickle.loads(blob))

    def state_bytes(self, account: str) -> int:
        """Approximate memory of one account's state (numpy buffers + pickled rest)."""
        st = self._states().peek(account)
        if st is None:
            return 0
        return len(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))


class InputDetector(Detector):
    """Scores each input (and/or the model's output on it); higher = more suspicious.

    Subclasses implement ``_fit(X, y, model)`` and ``_score(X, model) -> ndarray``. ``fit`` then
    calibrates ``threshold_`` as the ``1 - fpr`` quantile of scores on the clean reference data.
    Supervised detectors (those learning from known adversarial examples, e.g. Gong et al.) set
    ``uses_adversarial = True`` and get ``fit(..., X_adv=...)`` passed on as ``_fit(..., X_adv=...)``;
    ``requires_model = True`` makes a missing ``model`` a clear error. Models go through
    :func:`kizashi.detectors.models.as_model`, so scikit-learn estimators work as they are.
    """

    fpr: float = 0.05
    uses_adversarial: ClassVar[bool] = False
    requires_adversarial: ClassVar[bool] = False
    requires_model: ClassVar[bool] = False

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, *, model: Any = None, X_calib: Any = None,
            X_adv: Any = None) -> InputDetector:
        """Learn from clean ``X`` (labels ``y`` where the method needs them) and calibrate the threshold
        on ``X_calib`` (default ``X``); ``X_adv``: known adversarial examples for supervised methods."""
        from .models import as_model

        X = check_array(X)
        self.n_features_in_ = X.shape[1]
        if model is None and self.requires_model:
            raise ValueError(f"{type(self).__name__} needs the protected model: fit(X, y, model=...)")
        model = as_model(model)
        self.model_ = model
        y_arr = None if y is None else np.asarray(y)
        if y_arr is not None and len(y_arr) != len(X):
            raise ValueError(f"y has {len(y_arr)} labels for {len(X)} samples")
        if X_adv is not None:
            if not self.uses_adversarial:
                raise ValueError(f"{type(self).__name__} learns from clean data only; X_adv is not used")
            X_adv = check_array(X_adv, n_features=self.n_features_in_, name="X_adv")
            self._fit(X, y_arr, model, X_adv=X_adv)
        elif self.requires_adversarial:
            raise ValueError(f"{type(self).__name__} learns clean vs adversarial: pass fit(..., X_adv=...)")
        else:
            self._fit(X, y_arr, model)
        calib = X if X_calib is None else check_array(X_calib, n_features=self.n_features_in_, name="X_calib")
        self.calibrate(calib, model=model)
        return self

    def calibrate(self, X_clean: Any, *, model: Any = None) -> InputDetector:
        """Set ``threshold_`` so that about ``fpr`` of ``X_clean`` is flagged."""
        s = self.score(X_clean, model=model)
        fpr = float(getattr(self, "fpr", 0.05))
        if not 0 < fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {fpr}")
        self.threshold_ = float(np.quantile(s, 1.0 - fpr))
        return self

    def score(self, X: Any, *, model: Any = None) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")
        X = check_array(X, n_features=self.n_features_in_, allow_1d=True)
        if model is not None:
            from .models import as_model

            model = as_model(model)
        else:
            model = self.model_
        return np.asarray(self._score(X, model), dtype=np.float64)

    decision_function = score

    def predict(self, X: Any, *, model: Any = None) -> np.ndarray:
        self._check_fitted()
        return self.score(X, model=model) > self.threshold_

    def detect(self, X: Any, *, account: str | None = None, time: datetime | None = None,
               model: Any = None, source_ip: str | None = None, session: str | None = None,
               indices: Iterable[Any] | None = None) -> list[DetectionEvent]:
        """One event per input scoring above the threshold."""
        self._check_fitted()
        s = self.score(X, model=model)
        idx = list(indices) if indices is not None else list(range(len(s)))
        events = []
        for i, v in zip(idx, s, strict=True):
            if v > self.threshold_:
                events.append(self.make_event(float(v), account=account, time=time, source_ip=source_ip,
                                              session=session, evidence={"input_index": i}))
        return events


@dataclass
class Report:
    """What a training-data or model inspection found."""

    detector: str
    scores: np.ndarray  # per sample (data) or per class/probe (model); higher = more suspicious
    flagged: np.ndarray  # indices of flagged samples (data), or [] / [0] for a model verdict
    target_class: int | None = None
    suspicious: bool = False  # model inspection verdict, or "the dataset looks poisoned"
    score: float = 0.0  # overall score compared with threshold
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_events(self, detector: Detector, *, time: datetime | None = None, dataset: str | None = None,
                  max_indices: int = 200) -> list[DetectionEvent]:
        """One precursor event when the inspection is suspicious (flagged indices in evidence)."""
        if not self.suspicious and len(self.flagged) == 0:
            return []
        flagged = [int(i) for i in np.asarray(self.flagged).ravel()[:max_indices]]
        evidence: dict[str, Any] = {
            "n_flagged": int(len(self.flagged)),
            "flagged_indices": flagged,
            "target_class": self.target_class,
        }
        if dataset:
            evidence["dataset"] = dataset
        for k, v in self.details.items():
            if isinstance(v, int | float | str | bool) or v is None:
                evidence[k] = v
        return [detector.make_event(self.score, threshold=self.threshold, time=time, evidence=evidence)]


class DataDetector(Detector):
    """Inspects a training set (``inspect``) or a trained model (``inspect_model``) before deployment."""

    @classmethod
    def learns_from_trusted_data(cls) -> bool:
        """Whether ``fit(X_trusted, y_trusted)`` must come before ``inspect`` (e.g. ``depois``)."""
        return cls.fit is not DataDetector.fit

    def fit(self, X: Any = None, y: Any = None, *, model: Any = None) -> DataDetector:
        """Most data detectors need no separate fit; those that learn from trusted data override."""
        self.threshold_ = getattr(self, "threshold_", None)
        return self

    def inspect(self, X: Any, y: Any, *, model: Any = None) -> Report:
        raise NotImplementedError(f"{type(self).__name__} inspects models, not datasets")

    def inspect_model(self, model: Any, X_clean: Any) -> Report:
        raise NotImplementedError(f"{type(self).__name__} inspects datasets, not models")
