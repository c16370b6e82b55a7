"""Unsafe-artifact scan: static inspection of model (and data) files for code that runs when they
are loaded, without loading them. A pickle can name any importable callable (``os.system``,
``builtins.exec``) and call it while being unpickled, so a model file is a supply-chain vector
(ATLAS AML.T0011.000 Unsafe AI Artifacts, reached through AML.T0010.003 a compromised model).

Pickle streams are disassembled opcode by opcode (Trail of Bits' ``fickling``; the standard
library's ``pickletools`` walk for the callables it names), never executed. Formats: raw pickle
and joblib files, PyTorch's zip archives (``*/data.pkl``) and legacy files (pickles back to back),
NumPy ``.npy``/``.npz`` with object arrays (pickled), skops files (their untrusted types).
ONNX and safetensors hold no code: they are reported clean.
"""

from __future__ import annotations

import ast
import io
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import ModelDetector, Need, Needs, Report, register

#: top-level modules whose callables a model pickle ordinarily names: reconstructors of arrays,
#: tensors and estimators. Anything else is reported; fickling's list of callables that run code
#: (os, subprocess, builtins.eval/exec, ...) is reported as critical whatever its module.
KNOWN_MODULES = frozenset({"numpy", "scipy", "sklearn", "torch", "collections", "joblib", "_codecs", "copyreg",
                           "__builtin__", "builtins", "datetime", "pandas", "threadpoolctl", "skops"})

#: callables in otherwise known modules that evaluate code (builtins.eval, exec, ...)
_RUNS_CODE = frozenset({"builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__",
                        "builtins.getattr", "builtins.open", "__builtin__.eval", "__builtin__.exec",
                        "__builtin__.getattr", "__builtin__.__import__", "copyreg._reconstructor.__globals__"})


#: scikit-learn types a ``.skops`` model may contain without the caller trusting them by name
SKOPS_TRUSTED = (
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.svm._classes.SVC",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)


@dataclass
class ArtifactReport(Report):
    """A scan: one event per finding (:meth:`to_events`), each naming the offending callable."""

    def to_events(self, detector: Any, *, time: Any = None, dataset: str | None = None,
                  max_indices: int = 200) -> list[Any]:
        out = []
        for f in self.details.get("findings", []):
            evidence = {k: v for k, v in f.items() if k != "severity"}
            if dataset:
                evidence["dataset"] = dataset
            out.append(detector.make_event(1.0, threshold=0.5, time=time, severity=f["severity"], evidence=evidence))
        return out


def _stream_end(data: bytes, start: int) -> tuple[list[str], int | None]:
    """Callables named by the pickle starting at ``start`` (``module.name``; STACK_GLOBAL resolved
    from the two strings pushed before it, following the memo) and the offset after its STOP, or
    None when the stream does not parse to a STOP (truncated, interrupted, or not a pickle)."""
    names: list[str] = []
    pushed: list[str | None] = []  # the string each push left on the stack (None: not a string)
    memo: dict[int, str | None] = {}
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data[start:])):
            if op.name in _STRING_OPS:
                pushed.append(str(arg))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = pushed[-1] if pushed else None
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg)))
            elif op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                mod, name = (pushed[-2:] if len(pushed) >= 2 else [None, None])
                names.append(f"{mod}.{name}" if mod and name else "<unresolved STACK_GLOBAL>")
                pushed.append(None)
            elif op.name == "STOP":
                return names, start + pos + 1
            elif op.stack_after:
                pushed.append(None)
    except Exception:  # noqa: BLE001 - any malformed stream ends the walk; reported by the caller
        return names, None
    return names, None


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})


def _dotted(node: Any) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [f"{node.module}.{a.name}" for a in node.names]
    return [a.name for a in node.names]


def _fickling_imports(stream: bytes) -> tuple[list[str], set[str]] | None:
    """(every callable the stream imports, those fickling calls unsafe), or None when fickling
    cannot model the stream."""
    from fickling.fickle import Pickled

    try:
        pickled = Pickled.load(stream)
        names = [n for node in pickled.properties.imports for n in _dotted(node)]
        unsafe = {n for node in pickled.unsafe_imports() for n in _dotted(node)}
    except Exception:  # noqa: BLE001 - fickling cannot model every stream; the opcode walk still reports
        return None
    return names, unsafe


#: modules whose names inside bytes that do not parse as a pickle are reported (the byte search
#: behind an unparseable stream, e.g. a joblib file whose raw array bytes interrupt the pickle)
_DANGEROUS_MODULES = (b"os", b"posix", b"nt", b"subprocess", b"builtins", b"__builtin__", b"socket", b"runpy",
                      b"importlib", b"pty", b"shutil", b"webbrowser", b"code", b"ctypes")


def _byte_search(data: bytes) -> list[str]:
    """Dangerous module names pushed as pickle strings (SHORT_BINUNICODE or GLOBAL) anywhere in ``data``."""
    found = []
    for mod in _DANGEROUS_MODULES:
        if bytes([0x8C, len(mod)]) + mod in data or b"c" + mod + b"\n" in data:
            found.append(mod.decode())
    return found


#: path components that reach code execution or the OS, even behind a known module's attribute
#: chain (protocol 4 resolves ``numpy`` + ``testing._private.utils.os.system`` to ``os.system``)
_CODE_COMPONENTS = frozenset({"os", "posix", "nt", "subprocess", "system", "popen", "exec", "eval", "execfile",
                              "builtins", "__builtins__", "__builtin__", "__import__", "compile", "getattr",
                              "socket", "sys", "runpy", "importlib", "ctypes", "shutil", "pty", "webbrowser"})


def _runs_code(name: str, unsafe: set[str]) -> bool:
    """Whether an imported callable runs code: on :data:`_RUNS_CODE`, or flagged by fickling --
    except, inside :data:`KNOWN_MODULES`, where fickling's name heuristics flag benign
    reconstructors (``numpy.random._pickle...``), only a path through :data:`_CODE_COMPONENTS`."""
    if name in _RUNS_CODE:
        return True
    parts = name.split(".")
    if parts[0] in KNOWN_MODULES and parts[0] not in ("builtins", "__builtin__"):
        return any(p in _CODE_COMPONENTS for p in parts[1:])
    return name in unsafe


def _finding(name: str | None, member: str | None, severity: str, reason: str) -> dict[str, Any]:
    return {"format": "pickle", "member": member, "callable": name, "severity": severity, "reason": reason}


def scan_pickles(data: bytes, member: str | None = None) -> list[dict[str, Any]]:
    """Findings for the pickle streams at the start of ``data`` (one after another, as PyTorch's
    legacy format writes them): callables that run code (critical: fickling's unsafe imports and
    :data:`_RUNS_CODE`), callables outside :data:`KNOWN_MODULES` (medium), and a stream that does
    not parse to its end (high, with a byte search for dangerous module names behind it)."""
    findings: list[dict[str, Any]] = []
    pos, n_streams = 0, 0
    while pos < len(data) and (n_streams == 0 or data[pos:pos + 1] == b"\x80"):
        walked, end = _stream_end(data, pos)
        modelled = _fickling_imports(data[pos:end]) if end else None
        names, unsafe = modelled if modelled is not None else (walked, set())
        for name in dict.fromkeys(names):
            if _runs_code(name, unsafe):
                findings.append(_finding(name, member, "critical", "runs code or reaches the OS when unpickled"))
            elif name.split(".")[0] not in KNOWN_MODULES:
                findings.append(_finding(name, member, "medium",
                                         "imports a callable outside the known ML libraries when unpickled"))
        n_streams += 1
        if end is None:
            rest = data[pos:]
            for mod in _byte_search(rest):
                findings.append(_finding(f"{mod}.?", member, "critical",
                                         "a dangerous module is named in bytes that do not parse as a pickle"))
            findings.append(_finding(None, member, "high", "the pickle stream does not parse to its end (joblib raw "
                                     "arrays, truncation or tampering): its remainder cannot be vouched for"))
            break
        pos = end
    return findings


def _npy_object_payload(raw: bytes) -> bytes | None:
    """The pickle inside an ``.npy`` of object dtype (after its header), else None."""
    if not raw.startswith(b"\x93NUMPY"):
        return None
    major = raw[6]
    if major == 1:
        hlen, off = struct.unpack("<H", raw[8:10])[0], 10
    else:
        hlen, off = struct.unpack("<I", raw[8:12])[0], 12
    header = raw[off:off + hlen].decode("latin1", "replace")
    return raw[off + hlen:] if "'|O'" in header or "'O'" in header else None


def scan_bytes(data: bytes, name: str = "artifact") -> tuple[str, list[dict[str, Any]]]:
    """``(format, findings)`` for the bytes of one artifact; nothing is loaded or executed."""
    if data.startswith(b"PK\x03\x04"):
        findings: list[dict[str, Any]] = []
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = zf.namelist()
            torch_zip = any(m.endswith("data.pkl") for m in members)
            for m in members:
                if m.endswith(".pkl"):
                    findings += scan_pickles(zf.read(m), m)
                elif m.endswith(".npy"):
                    payload = _npy_object_payload(zf.read(m))
                    if payload is not None:
                        findings += scan_pickles(payload, m)
                elif m == "schema.json" and not torch_zip:
                    findings += _scan_skops(data)
                    break
        fmt = "pytorch-zip" if torch_zip else ("skops" if "schema.json" in members else "zip")
        return fmt, findings
    if data.startswith(b"\x93NUMPY"):
        payload = _npy_object_payload(data)
        return "npy", scan_pickles(payload, name) if payload is not None else []
    if _is_safetensors(data):
        return "safetensors", []
    if _is_onnx(data):
        return "onnx", []
    return "pickle", scan_pickles(data, None)


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    n = struct.unpack("<Q", data[:8])[0]
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def _is_onnx(data: bytes) -> bool:
    if data[:1] != b"\x08":  # protobuf field 1 (ir_version), varint
        return False
    try:
        import onnx

        onnx.load_from_string(data)
        return True
    except Exception:  # noqa: BLE001 - not an ONNX protobuf
        return False


def _scan_skops(data: bytes) -> list[dict[str, Any]]:
    from skops.io import get_untrusted_types

    types = [t for t in get_untrusted_types(data=data) if t not in SKOPS_TRUSTED]
    return [{"format": "skops", "member": "schema.json", "callable": t, "severity": "medium",
             "reason": "type trusted neither by skops nor by kizashi: loading it runs its constructor"} for t in types]


@register("artifact_scan")
class ArtifactScan(ModelDetector):
    """Scan a model file (path or bytes) statically: ``inspect_model(path_or_bytes)`` -> a report
    whose events (one per finding) name the offending callable, tagged AML.T0011.000 and
    AML.T0010.003. The suspect is never loaded; no data or model outputs are needed. Adapters:
    none (it reads the file, not a model object). ``critical`` findings: callables that run code
    (fickling's unsafe imports, ``builtins.eval``...); ``medium``: callables outside
    :data:`KNOWN_MODULES`, unparseable pickles, types skops does not trust."""

    method = "kizashi-artifact-scan"
    needs = Needs(model=Need.REQUIRED)

    def __init__(self, max_bytes: int = 2_000_000_000):
        self.max_bytes = max_bytes

    def inspect_model(self, model: Any, X_clean: Any = None) -> Report:  # type: ignore[override]
        """Scan ``model``: a path to the artifact or its bytes (``X_clean`` is not used: the file is
        judged by itself, so the base class's data checks and model adaptation are skipped)."""
        return self._inspect_model(model, None)

    def _inspect_model(self, model: Any, X_clean: Any) -> Report:
        if isinstance(model, bytes | bytearray):
            data, name = bytes(model), "artifact"
        elif isinstance(model, str | Path):
            p = Path(model)
            if p.stat().st_size > int(self.max_bytes):
                raise ValueError(f"{p.name} is larger than max_bytes={self.max_bytes}")
            data, name = p.read_bytes(), p.name
        else:
            raise TypeError("artifact_scan inspects a file: pass its path or bytes, not a loaded model")
        fmt, findings = scan_bytes(data, name)
        for f in findings:
            f["artifact"] = name
        order = {"critical": 2, "high": 1, "medium": 0}
        scores = np.array([order.get(f["severity"], 0) + 1.0 for f in findings])
        return ArtifactReport(self.name, scores, np.array([], dtype=int), suspicious=bool(findings),
                              score=float(scores.max()) if len(scores) else 0.0, threshold=0.5,
                              details={"format": fmt, "findings": findings, "n_findings": len(findings)},
                              subject="model")

    scan = inspect_model
