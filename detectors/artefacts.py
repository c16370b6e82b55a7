"""Fitted detectors and per-account state as files, without pickle.

A fitted detector is a folder: ``detector.json`` (registry name, constructor parameters and fitted
attributes as a JSON tree) and ``arrays.npz`` (every numpy array the tree points at, loaded with
``allow_pickle=False``, so no object arrays). Objects inside the tree (a PCA, a feature space, a
per-account state record) are rebuilt only when their class is on an allow-list (kizashi's own
detector modules and a few plain scikit-learn transformers) from plain data: nothing in a file can
name code to run. The protected model (``model_``) is never written: at run time the sensor gives
input detectors the model server's own answers.

Per-account state of a stream detector uses the same tree inside one ``.npz`` (``state_to_bytes``),
so a sensor's snapshots survive a restart and are as safe to load as the artefacts.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "ArtefactError", "load_fitted", "save_fitted", "state_from_bytes", "state_to_bytes"]

FORMAT = "kizashi.fitted/1"
STATE_FORMAT = "kizashi.state/1"
#: attributes never written: the protected model, and per-account state (snapshots hold that)
NOT_SAVED = ("model_", "states_")
#: classes outside kizashi.detectors that may appear in fitted attributes (plain-data transformers)
ALLOWED_CLASSES = frozenset({
    "sklearn.decomposition._pca.PCA",
    "sklearn.preprocessing._data.StandardScaler",
})
_ARRAY_KINDS = "biufc"
INLINE_MAX = 256


class ArtefactError(ValueError):
    """A fitted artefact or state blob cannot be written or read (the message says why)."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed(path: str) -> bool:
    module, _, qual = path.partition(":")
    return module.startswith("kizashi.detectors") or f"{module}.{qual}" in ALLOWED_CLASSES


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, a: np.ndarray, where: str) -> dict:
        if a.dtype.kind not in _ARRAY_KINDS:
            raise ArtefactError(f"{where}: arrays of dtype {a.dtype} cannot be saved safely")
        if a.size <= INLINE_MAX and a.dtype.kind in "biu" or (a.size <= INLINE_MAX and a.dtype.kind == "f"
                                                                and bool(np.isfinite(a).all())):  # small arrays stay in the tree (fewer npz members)
            return {"$inline": a.dtype.str, "shape": list(a.shape), "v": a.reshape(-1).tolist()}
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.array(a, copy=True)
        return {"$array": key}

    def __call__(self, v: Any, where: str = "") -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int) and not isinstance(v, np.integer):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"$float": repr(v)}
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if isinstance(v, np.generic):
            if v.dtype.kind not in _ARRAY_KINDS:
                raise ArtefactError(f"{where}: numpy scalar of dtype {v.dtype} cannot be saved")
            return {"$scalar": v.dtype.str, "v": self(v.item(), where)}
        if isinstance(v, list):
            return [self(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return {"$tuple": [self(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, deque):
            return {"$deque": [self(x, f"{where}[{i}]") for i, x in enumerate(v)], "maxlen": v.maxlen}
        if isinstance(v, set | frozenset):
            return {"$set": [self(x, where) for x in sorted(v, key=repr)]}
        if isinstance(v, dict):
            return {"$dict": [[self(k, where), self(x, f"{where}.{k}")] for k, x in v.items()]}
        if isinstance(v, datetime):
            return {"$datetime": v.isoformat()}
        path = _class_path(type(v))
        if not _allowed(path):
            raise ArtefactError(f"{where}: {type(v).__name__} ({path}) is not on the list of classes that can be "
                                "saved without pickle")
        return {"$object": path, "state": self(v.__getstate__(), where)}


class _Decoder:
    def __init__(self, arrays: Any):
        self.arrays = arrays

    def __call__(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$array" in v:
            a = self.arrays[v["$array"]]
            return np.array(a, copy=True)
        if "$inline" in v:
            dt = np.dtype(v["$inline"])
            if dt.kind not in _ARRAY_KINDS:
                raise ArtefactError(f"array dtype {dt} not allowed")
            return np.array([_float(x) for x in v["v"]], dtype=dt).reshape(v["shape"])
        if "$float" in v:
            return float(v["$float"])
        if "$scalar" in v:
            dt = np.dtype(v["$scalar"])
            if dt.kind not in _ARRAY_KINDS:
                raise ArtefactError(f"scalar dtype {dt} not allowed")
            return dt.type(self(v["v"]))
        if "$tuple" in v:
            return tuple(self(x) for x in v["$tuple"])
        if "$deque" in v:
            return deque((self(x) for x in v["$deque"]), maxlen=v.get("maxlen"))
        if "$set" in v:
            return {self(x) for x in v["$set"]}
        if "$dict" in v:
            return {_hashable(self(k)): self(x) for k, x in v["$dict"]}
        if "$datetime" in v:
            return datetime.fromisoformat(v["$datetime"])
        if "$object" in v:
            return self.obj(v["$object"], self(v.get("state")))
        raise ArtefactError(f"unknown entry {sorted(v)[:3]} in a saved tree")

    @staticmethod
    def obj(path: str, state: Any) -> Any:
        if not isinstance(path, str) or not _allowed(path):
            raise ArtefactError(f"class {path!r} is not on the allow-list")
        module, _, qual = path.partition(":")
        cls: Any = importlib.import_module(module)
        for part in qual.split("."):
            cls = getattr(cls, part)
        if not isinstance(cls, type):
            raise ArtefactError(f"{path} is not a class")
        obj = cls.__new__(cls)
        if hasattr(obj, "__setstate__"):
            obj.__setstate__(state)
        elif isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for name, value in (state[1] or {}).items():
                setattr(obj, name, value)
            if state[0]:
                obj.__dict__.update(state[0])
        elif isinstance(state, dict):
            obj.__dict__.update(state)
        return obj


def _float(x: Any) -> Any:
    return float(x["$float"]) if isinstance(x, dict) else x


def _hashable(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(data: bytes | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ArtefactError(f"not a readable .npz without object arrays: {exc}") from None


# -- fitted detectors ----------------------------------------------------------------------------


def fitted_attributes(detector: Any) -> dict[str, Any]:
    """The learned attributes (names ending in ``_``), without the model and per-account state."""
    return {k: v for k, v in vars(detector).items()
            if k.endswith("_") and not k.startswith("_") and k not in NOT_SAVED}


def save_fitted(detector: Any, out_dir: str | os.PathLike) -> Path:
    """Write ``detector`` (fitted) to ``out_dir`` as ``detector.json`` + ``arrays.npz``."""
    if not any(k.endswith("_") for k in vars(detector)):
        raise ArtefactError(f"{type(detector).__name__} is not fitted")
    enc = _Encoder()
    doc = {
        "format": FORMAT,
        "name": detector.name,
        "version": getattr(detector, "version", "0"),
        "params": {k: enc(v, k) for k, v in detector.get_params().items()},
        "fitted": {k: enc(v, k) for k, v in fitted_attributes(detector).items()},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "arrays.npz").write_bytes(_npz_bytes(enc.arrays))
    (out / "detector.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out


def load_fitted(path: str | os.PathLike) -> Any:
    """Rebuild a detector written by :func:`save_fitted` (``path``: the folder or its detector.json)."""
    from . import get

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    try:
        doc = json.loads((folder / "detector.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{folder}: no readable detector.json ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArtefactError(f"{folder}/detector.json is not a {FORMAT} artefact")
    arrays = _load_npz(folder / "arrays.npz") if (folder / "arrays.npz").exists() else {}
    dec = _Decoder(arrays)
    try:
        cls = get(str(doc.get("name")))
    except KeyError as exc:
        raise ArtefactError(str(exc)) from None
    try:
        det = cls(**{k: dec(v) for k, v in dict(doc.get("params") or {}).items()})
        for k, v in dict(doc.get("fitted") or {}).items():
            if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_")) or k in NOT_SAVED:
                raise ArtefactError(f"fitted attribute {k!r} not allowed")
            setattr(det, k, dec(v))
    except (TypeError, KeyError, AttributeError) as exc:
        raise ArtefactError(f"{folder}: {exc}") from None
    if "n_features_in_" in vars(det) or hasattr(det, "threshold_"):
        det.model_ = None
    return det


# -- per-account state ----------------------------------------------------------------------------


_STATE_MAGIC = b"KZSTATE1"


def state_to_bytes(tree: Any) -> bytes:
    """A state tree (plain data, numpy arrays and allow-listed objects) as bytes: a magic, the JSON
    tree, then the arrays' raw bytes (dtype and shape in the tree; no pickle, no object arrays)."""
    enc = _Encoder()
    doc = {"format": STATE_FORMAT, "state": enc(tree, "state"), "arrays": {}}
    raw, offset = [], 0
    for key, a in enc.arrays.items():
        b = np.ascontiguousarray(a).tobytes()
        doc["arrays"][key] = [offset, len(b), a.dtype.str, list(a.shape)]
        raw.append(b)
        offset += len(b)
    text = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    return _STATE_MAGIC + len(text).to_bytes(8, "big") + text + b"".join(raw)


def state_from_bytes(blob: bytes) -> Any:
    """The tree written by :func:`state_to_bytes`."""
    if not blob.startswith(_STATE_MAGIC) or len(blob) < 16:
        raise ArtefactError("not a kizashi state blob")
    n = int.from_bytes(blob[8:16], "big")
    try:
        doc = json.loads(blob[16:16 + n])
    except ValueError as exc:
        raise ArtefactError(f"state blob has no readable tree: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise ArtefactError(f"not a {STATE_FORMAT} blob")
    data = memoryview(blob)[16 + n:]
    arrays = {}
    for key, spec in dict(doc.get("arrays") or {}).items():
        try:
            off, size, dtype, shape = spec
            dt = np.dtype(dtype)
            if dt.kind not in _ARRAY_KINDS or off < 0 or off + size > len(data):
                raise ValueError("bad array entry")
            arrays[key] = np.frombuffer(data[off:off + size], dtype=dt).reshape(shape).copy()
        except (TypeError, ValueError) as exc:
            raise ArtefactError(f"state blob array {key!r}: {exc}") from None
    return _Decoder(arrays)(doc.get("state"))
