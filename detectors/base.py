"""The detector protocol: framework-neutral (numpy arrays in, kizashi events out), estimator-shaped.

Style follows scikit-learn: the constructor takes only parameters, ``fit`` learns from reference
data and calibrates a threshold, fitted attributes end in ``_``. Four kinds, one base and one hook
each, named by the class attribute ``kind``:

* :class:`StreamDetector` (``"stream"``) watches the query stream per account:
  ``observe(x, account=...)``; hook ``_score_one(state, x, prediction, time)``.
* :class:`InputDetector` (``"input"``) scores each input: ``decision_function(X)`` (higher = more
  anomalous, scikit-learn's meaning), ``predict``, ``detect``; hook ``_score(X, model)``.
* :class:`DatasetDetector` (``"dataset"``) scores every sample of a training set:
  ``inspect(X, y) -> Report`` with ``subject="samples"``; hook ``_inspect(X, y, model)``.
* :class:`ModelDetector` (``"model"``) gives one verdict about a trained model:
  ``inspect_model(model, X_clean) -> Report`` with ``subject="model"``; hook ``_inspect_model``.

What a detector needs (labels, trusted clean data, adversarial examples, a model and which of its
outputs) is declared as data in the class attribute ``needs`` (:class:`Needs`), the way
scikit-learn declares estimator tags; the CLI and the benches read it instead of probing.

A *model* is any object with ``predict_proba(X)``; optionally ``features(X)`` (hidden activations),
``logits(X)`` and input gradients (``loss_gradient``, ``class_gradient``).
:func:`kizashi.detectors.models.as_model` adapts scikit-learn estimators.
"""

from __future__ import annotations

import copy
import inspect
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal

import numpy as np
from kizashi.engine.events import DataUsed, DetectionEvent, DetectorInfo, Subject, Target, utcnow
from kizashi.mappings import load_catalogue

__all__ = [
    "KINDS",
    "REGISTRY",
    "AccountStates",
    "DatasetDetector",
    "Detector",
    "InputDetector",
    "ModelDetector",
    "Need",
    "Needs",
    "NotFittedError",
    "Report",
    "StreamDetector",
    "check_array",
    "check_labels",
    "check_positive_int",
    "check_sample",
    "register",
]

#: the detector kinds, one base class each
KINDS = ("stream", "input", "dataset", "model")

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


def check_labels(y: Any, n_samples: int, *, name: str = "y") -> np.ndarray:
    """``y`` as an array of one label per sample, or ``ValueError``."""
    y = np.asarray(y)
    if y.shape != (n_samples,):
        raise ValueError(f"{name} must have one label per sample: {y.shape} for {n_samples} samples")
    return y


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# -- what a detector needs, as data ------------------------------------------------------------------


class Need(StrEnum):
    """How much a detector depends on one kind of data: not at all, when given, or always."""

    NO = "no"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True)
class Needs:
    """What a detector needs to be fitted and run, declared on the class as ``needs`` (like
    scikit-learn's estimator tags). ``"optional"`` marks data used when given (or for some
    parameter values); the docstring of the detector says how.

    * ``labels``: true class labels ``y`` of the data it learns from or inspects.
    * ``trusted_data``: data known to be clean, to ``fit`` on (benign reference queries, clean
      inputs, a trusted clean training subset) before scoring or inspecting.
    * ``adversarial_examples``: known attack examples to learn from (``fit(..., X_adv=...)``;
      ``atli``'s out-of-distribution queries ``X_ood``).
    * ``model``: the protected or suspect model (anything with ``predict_proba``).
    * ``probabilities``, ``logits``, ``activations`` (hidden layer), ``gradients`` (input
      gradients): what the detector asks the model adapter for.
    * ``predictions``: the model's answer to each query (``observe(..., prediction=)``), or the
      model to compute it.
    * ``query_times``: the time of each query (``observe(..., time=)``).
    """

    labels: Need = Need.NO
    trusted_data: Need = Need.NO
    adversarial_examples: Need = Need.NO
    model: Need = Need.NO
    probabilities: Need = Need.NO
    logits: Need = Need.NO
    activations: Need = Need.NO
    gradients: Need = Need.NO
    predictions: Need = Need.NO
    query_times: Need = Need.NO

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, Need(getattr(self, f.name)))

    def with_(self, **changes: Need | str) -> Needs:
        """A copy with some needs changed (for subclasses that need more or less than their base)."""
        return replace(self, **changes)

    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is Need.REQUIRED)

    def optional(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is Need.OPTIONAL)

    def as_dict(self) -> dict[str, str]:
        """The needs that are not ``"no"``, as plain strings (JSON)."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not Need.NO}


# -- the base class --------------------------------------------------------------------------------


class Detector:
    """Base of every kizashi detector.

    Subclasses set ``method`` (the catalogue method id they implement) and are registered with
    :func:`register`. Stage, attack family, ATLAS techniques and the Table 1 data marks of the events
    they emit come from the catalogue entry, so events and catalogue never disagree.
    """

    name: ClassVar[str] = "detector"
    #: one of :data:`KINDS`, set by the kind's base class
    kind: ClassVar[str]
    #: what the detector needs (data and model outputs), read by the CLI and the benches
    needs: ClassVar[Needs] = Needs()
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

    def put(self, account: str, state: Any) -> None:
        """Set one account's state (restoring a snapshot), keeping the bound."""
        self._states[account] = state
        self._states.move_to_end(account)
        if len(self._states) > self.max_accounts:
            self._states.popitem(last=False)
            self.evicted += 1

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


# -- stream detectors ----------------------------------------------------------------------------------

_T0 = datetime(2000, 1, 1, tzinfo=UTC)


class StreamDetector(Detector):
    """Watches the stream of inference queries, per account.

    Subclasses implement ``fit`` (which sets ``threshold_``, usually with :meth:`_calibrate`),
    ``_new_state()`` (an object with ``seen`` and ``detections`` attributes, one per account) and
    the hook ``_score_one(state, x, prediction, time) -> (score, evidence)``: the per-query
    statistic, ``nan`` while there are not enough queries yet; optionally ``_reset_state(state)``.
    The base keeps the bounded per-account state (saved and restored with ``get_state`` /
    ``set_state``), applies the threshold (``higher_is_suspicious = False`` for distance
    statistics), resets an account after an alarm and turns alarms into events.
    """

    kind = "stream"
    needs = Needs(trusted_data=Need.REQUIRED)
    higher_is_suspicious: ClassVar[bool] = True
    #: how the per-account threshold is read off the simulated benign accounts' extreme scores:
    #: "gumbel" fits an extreme-value (Gumbel) law to them and takes its ``fpr`` tail quantile, which
    #: extrapolates beyond the few dozen simulated accounts; "empirical" takes their plain quantile
    calibration_tail: ClassVar[str] = "gumbel"
    #: simulated benign accounts draw reference queries with replacement (window statistics of label
    #: or latent distributions; drawing a large share of a small reference set without replacement
    #: would understate their spread). Distance statistics draw without replacement: a repeated
    #: query is exactly what they look for.
    calibration_with_replacement: ClassVar[bool] = False
    #: constructor parameters consumed by the base (set by subclasses)
    max_accounts: int = 10_000
    fpr: float = 0.01
    calibration_streams: int = 40
    calibration_length: int = 300
    random_state: int = 0

    # -- hooks ---------------------------------------------------------------------------------
    def _new_state(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score_one(self, state: Any, x: np.ndarray, prediction: Any, time: datetime) -> tuple[float, dict]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _reset_state(self, state: Any) -> None:
        """Forget the account's history after an alarm (papers: buffer cleared)."""

    # -- the stream ----------------------------------------------------------------------------
    def _states(self) -> AccountStates:
        st = self.__dict__.get("states_")
        if st is None:
            st = AccountStates(self._new_state, max_accounts=int(getattr(self, "max_accounts", 10_000)))
            self.states_ = st
        return st

    def _is_alarm(self, score: float) -> bool:
        if not np.isfinite(score):
            return False
        return score < self.threshold_ if not self.higher_is_suspicious else score > self.threshold_

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
        state.seen += 1
        score, evidence = self._score_one(state, xv, prediction, time)
        if not self._is_alarm(score):
            return []
        state.detections += 1
        evidence = {"queries_seen": state.seen, **evidence, "detections": state.detections}
        self._reset_state(state)
        return [self.make_event(float(score), account=account, time=time, source_ip=source_ip, session=session,
                                evidence=evidence)]

    def reset(self, account: str | None = None) -> None:
        """Forget one account's state, or every account's."""
        if account is None:
            self.__dict__.pop("states_", None)
        else:
            self._states().reset(account)

    # -- scoring without events ---------------------------------------------------------------
    def score_stream(self, X: Any, predictions: Any = None, times: Any = None) -> np.ndarray:
        """The per-query statistic for ``X`` sent in order by one fresh account (no alarms, no
        reset; lower = more suspicious when ``higher_is_suspicious`` is False); ``nan`` where the
        detector has not seen enough queries yet."""
        self._check_fitted()
        X = check_array(X, n_features=getattr(self, "n_features_in_", None))
        return self._stream_scores(self._new_state(), X, predictions, times)

    def _stream_scores(self, state: Any, X: np.ndarray, predictions: Any, times: Any) -> np.ndarray:
        out = np.empty(len(X))
        for i, x in enumerate(X):
            p = None if predictions is None else predictions[i]
            t = times[i] if times is not None else _T0 + timedelta(seconds=10 * i)
            state.seen += 1
            out[i] = self._score_one(state, x, p, t)[0]
        return out

    def _calibrate(self, X: np.ndarray, predictions: np.ndarray | None = None) -> float:
        """Threshold such that about ``fpr`` of simulated benign accounts (streams of
        ``calibration_length`` reference queries in random order) would ever alarm. Benign accounts
        longer than ``calibration_length`` see more chances to alarm: set it to the longest
        account history you expect between resets."""
        fpr = float(self.fpr)
        if not 0 <= fpr < 1:
            raise ValueError(f"fpr must be in [0, 1), got {fpr}")
        rng = np.random.default_rng(self.random_state)
        replace = self.calibration_with_replacement
        length = int(self.calibration_length) if replace else min(int(self.calibration_length), len(X))
        extremes = []
        for _ in range(int(self.calibration_streams)):
            idx = rng.choice(len(X), size=length, replace=replace)
            s = self._stream_scores(self._new_state(), X[idx], None if predictions is None else predictions[idx],
                                    None)
            s = s[np.isfinite(s)]
            if len(s):
                extremes.append(s.max() if self.higher_is_suspicious else s.min())
        if not extremes:
            raise ValueError(f"reference data too small: {len(X)} queries never fill the detector's window")
        extremes = np.asarray(extremes)
        self.calibration_extremes_ = extremes
        if self.calibration_tail == "gumbel" and np.ptp(extremes) > 0 and fpr > 0:
            from scipy.stats import gumbel_l, gumbel_r

            if self.higher_is_suspicious:
                return float(max(gumbel_r.ppf(1.0 - fpr, *gumbel_r.fit(extremes)), extremes.max()))
            return float(min(gumbel_l.ppf(fpr, *gumbel_l.fit(extremes)), extremes.min()))
        if self.higher_is_suspicious:
            return float(np.quantile(extremes, 1.0 - fpr))
        return float(np.quantile(extremes, fpr))

    # -- save / restore -----------------------------------------------------------------------
    def get_state(self) -> bytes:
        """The whole per-account state as bytes (JSON tree + raw arrays, no pickle:
        :func:`kizashi.detectors.artefacts.state_to_bytes`), safe to load from any file."""
        from .artefacts import state_to_bytes

        return state_to_bytes(self._states().dump())

    def set_state(self, blob: bytes) -> None:
        """Restore what :meth:`get_state` returned."""
        from .artefacts import state_from_bytes

        self._states().load(state_from_bytes(blob))

    def state_bytes(self, account: str) -> int:
        """Approximate memory of one account's state (numpy buffers + pickled rest; only dumped,
        never loaded)."""
        st = self._states().peek(account)
        if st is None:
            return 0
        return len(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))

    # -- events --------------------------------------------------------------------------------
    def make_event(self, score: float, *, threshold: float | None = None, severity: str | None = None,
                   **kw: Any) -> DetectionEvent:
        thr = float(threshold) if threshold is not None else getattr(self, "threshold_", None)
        if severity is None and not self.higher_is_suspicious and thr is not None:
            severity = _severity(thr / max(score, 1e-12), 1.0)
        return super().make_event(score, threshold=thr, severity=severity, **kw)


# -- input detectors -----------------------------------------------------------------------------------


class InputDetector(Detector):
    """Scores each input (and/or the model's output on it).

    Subclasses implement ``_fit(X, y, model, X_adv)`` and the hook ``_score(X, model) -> ndarray``.
    ``fit`` checks the data against ``needs`` (a missing required model or adversarial examples,
    or adversarial examples given to a detector that cannot use them, are errors), then calibrates
    ``threshold_`` as the ``1 - fpr`` quantile of scores on the clean calibration data. Models go
    through :func:`kizashi.detectors.models.as_model`, so scikit-learn estimators work as they are.
    """

    kind = "input"
    needs = Needs(trusted_data=Need.REQUIRED)
    fpr: float = 0.05

    def _fit(self, X: np.ndarray, y: np.ndarray | None, model: Any,
             X_adv: np.ndarray | None = None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, X: np.ndarray, model: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None, *, model: Any = None, X_calib: Any = None,
            X_adv: Any = None) -> InputDetector:
        """Learn from clean ``X`` (labels ``y`` where the method needs them) and calibrate the threshold
        on ``X_calib`` (default ``X``); ``X_adv``: known adversarial examples for supervised methods."""
        from .models import as_model

        X = check_array(X)
        self.n_features_in_ = X.shape[1]
        if model is None and self.needs.model is Need.REQUIRED:
            raise ValueError(f"{type(self).__name__} needs the protected model: fit(X, y, model=...)")
        model = as_model(model)
        self.model_ = model
        y_arr = None if y is None else np.asarray(y)
        if y_arr is not None and len(y_arr) != len(X):
            raise ValueError(f"y has {len(y_arr)} labels for {len(X)} samples")
        if X_adv is not None:
            if self.needs.adversarial_examples is Need.NO:
                raise ValueError(f"{type(self).__name__} learns from clean data only; X_adv is not used")
            X_adv = check_array(X_adv, n_features=self.n_features_in_, name="X_adv")
        elif self.needs.adversarial_examples is Need.REQUIRED:
            raise ValueError(f"{type(self).__name__} learns clean vs adversarial: pass fit(..., X_adv=...)")
        self._fit(X, y_arr, model, X_adv)
        calib = X if X_calib is None else check_array(X_calib, n_features=self.n_features_in_, name="X_calib")
        self.calibrate(calib, model=model)
        return self

    def calibrate(self, X_clean: Any, *, model: Any = None) -> InputDetector:
        """Set ``threshold_`` so that about ``fpr`` of ``X_clean`` is flagged."""
        s = self.decision_function(X_clean, model=model)
        fpr = float(getattr(self, "fpr", 0.05))
        if not 0 < fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {fpr}")
        self.threshold_ = float(np.quantile(s, 1.0 - fpr))
        return self

    def decision_function(self, X: Any, *, model: Any = None) -> np.ndarray:
        """Anomaly score of each input: higher = more suspicious (scikit-learn's meaning)."""
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")
        X = check_array(X, n_features=self.n_features_in_, allow_1d=True)
        if model is not None:
            from .models import as_model

            model = as_model(model)
        else:
            model = self.model_
        return np.asarray(self._score(X, model), dtype=np.float64)

    #: the same as :meth:`decision_function`
    score = decision_function

    def predict(self, X: Any, *, model: Any = None) -> np.ndarray:
        self._check_fitted()
        return self.decision_function(X, model=model) > self.threshold_

    def detect(self, X: Any, *, account: str | None = None, time: datetime | None = None,
               model: Any = None, source_ip: str | None = None, session: str | None = None,
               indices: Iterable[Any] | None = None) -> list[DetectionEvent]:
        """One event per input scoring above the threshold."""
        self._check_fitted()
        s = self.decision_function(X, model=model)
        idx = list(indices) if indices is not None else list(range(len(s)))
        events = []
        for i, v in zip(idx, s, strict=True):
            if v > self.threshold_:
                events.append(self.make_event(float(v), account=account, time=time, source_ip=source_ip,
                                              session=session, evidence={"input_index": i}))
        return events


# -- dataset and model inspections ----------------------------------------------------------------------


@dataclass
class Report:
    """What an inspection found: about the samples of a training set (``subject="samples"``: per-sample
    ``scores``, ``flagged`` sample indices) or about a model (``subject="model"``: ``scores`` per class
    or probe, no flagged samples, the verdict in ``suspicious``)."""

    detector: str
    scores: np.ndarray  # per sample, or per class/probe of a model; higher = more suspicious
    flagged: np.ndarray  # indices of flagged samples (empty for a model)
    target_class: int | None = None
    suspicious: bool = False  # "the dataset looks poisoned", or "the model looks backdoored"
    score: float = 0.0  # overall score compared with threshold
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    subject: Literal["samples", "model"] = field(default="samples", kw_only=True)

    def __post_init__(self) -> None:
        if self.subject not in ("samples", "model"):
            raise ValueError(f"subject must be 'samples' or 'model', got {self.subject!r}")
        if self.subject == "model" and len(self.flagged):
            raise ValueError("a report about a model flags no samples: its verdict is `suspicious`")

    def to_events(self, detector: Detector, *, time: datetime | None = None, dataset: str | None = None,
                  max_indices: int = 200) -> list[DetectionEvent]:
        """One precursor event when the inspection is suspicious (flagged sample indices in evidence)."""
        if not self.suspicious and len(self.flagged) == 0:
            return []
        evidence: dict[str, Any] = {}
        if self.subject == "samples":
            evidence["n_flagged"] = int(len(self.flagged))
            evidence["flagged_indices"] = [int(i) for i in np.asarray(self.flagged).ravel()[:max_indices]]
        evidence["target_class"] = self.target_class
        if dataset:
            evidence["dataset"] = dataset
        for k, v in self.details.items():
            if isinstance(v, int | float | str | bool) or v is None:
                evidence[k] = v
        return [detector.make_event(self.score, threshold=self.threshold, time=time, evidence=evidence)]


_OUTPUT_WORDS = {"probabilities": "output probabilities", "logits": "logits", "activations": "hidden activations",
                 "gradients": "input gradients"}


class DatasetDetector(Detector):
    """Scores every sample of a training set before training on it: ``inspect(X, y) -> Report``.

    Subclasses implement the hook ``_inspect(X, y, model) -> Report`` (``X`` and ``y`` checked).
    Those whose ``needs.trusted_data`` is required learn from trusted clean data first: they
    implement ``_fit(X, y, model)``, and ``fit(X_trusted, y_trusted)`` must come before ``inspect``.
    """

    kind = "dataset"
    needs = Needs(labels=Need.REQUIRED)

    def _inspect(self, X: np.ndarray, y: np.ndarray, model: Any) -> Report:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray, model: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X: Any = None, y: Any = None, *, model: Any = None) -> DatasetDetector:
        """Learn from trusted clean ``(X, y)`` when ``needs.trusted_data`` says so; otherwise a no-op
        (the detector judges the inspected set by itself)."""
        if self.needs.trusted_data is Need.NO:
            return self
        if X is None or y is None:
            raise ValueError(f"{self.name} learns from trusted clean data: call fit(X_trusted, y_trusted)")
        X = check_array(X)
        self._fit(X, check_labels(y, len(X)), model)
        self.n_features_in_ = X.shape[1]
        return self

    def inspect(self, X: Any, y: Any, *, model: Any = None) -> Report:
        """Per-sample suspicion scores, flagged samples, suspected target class and a dataset verdict."""
        if self.needs.trusted_data is Need.REQUIRED:
            self._check_fitted("n_features_in_")
        X = check_array(X, n_features=getattr(self, "n_features_in_", None))
        y = check_labels(y, len(X))
        if model is None and self.needs.model is Need.REQUIRED:
            outputs = [_OUTPUT_WORDS[n] for n in self.needs.required() if n in _OUTPUT_WORDS]
            with_ = f" (its {', '.join(outputs)})" if outputs else ""
            raise ValueError(f"{self.name} needs the model trained on the data{with_}: inspect(X, y, model=...)")
        report = self._inspect(X, y, model)
        if report.subject != "samples":
            raise TypeError(f"{type(self).__name__}._inspect must return a report about samples")
        return report


class ModelDetector(Detector):
    """Gives one verdict about a trained model (e.g. a backdoor): ``inspect_model(model, X_clean)``.

    Subclasses implement the hook ``_inspect_model(model, X_clean) -> Report`` with
    ``subject="model"``; the model arrives adapted by :func:`kizashi.detectors.models.as_model`.
    """

    kind = "model"
    needs = Needs(trusted_data=Need.REQUIRED, model=Need.REQUIRED, probabilities=Need.REQUIRED)

    def _inspect_model(self, model: Any, X_clean: np.ndarray) -> Report:  # pragma: no cover - abstract
        raise NotImplementedError

    def inspect_model(self, model: Any, X_clean: Any) -> Report:
        """The verdict on ``model``, probed with a few clean inputs ``X_clean``."""
        from .models import require_model

        X = check_array(X_clean, name="X_clean")
        report = self._inspect_model(require_model(model, self.name), X)
        if report.subject != "model":
            raise TypeError(f"{type(self).__name__}._inspect_model must return a report about the model")
        return report
