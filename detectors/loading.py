"""Safe model loading: a model file is opened in a format that cannot run code, or not at all.

* ONNX (``.onnx``; checked by ``onnx``, run by onnxruntime) -> :class:`OnnxModel`;
* safetensors (``.safetensors``) and PyTorch weights (``.pt``/``.pth``, ``torch.load(weights_only=True)``)
  -> :class:`TorchModel`, into an architecture the user names (``"package.module:factory"``, a
  callable returning the ``nn.Module``): weights files hold tensors, never code;
* skops (``.skops``) for scikit-learn, with an explicit list of trusted types
  (:data:`SKOPS_TRUSTED` plus the caller's); a file needing any other type is refused, naming it.

Pickle and joblib files are refused with the reason (unpickling runs any callable the file names:
ATLAS AML.T0011.000) and the formats to use instead. ``allow_pickle=True`` is for files the user
trusts: the file is scanned statically first (:mod:`.artifact_scan`) and refused anyway when the
scan finds a callable that runs code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .artifact_scan import SKOPS_TRUSTED, ArtifactScan
from .models import OnnxModel, TorchModel

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".sav")
SAFE_FORMATS = ".onnx, .safetensors (+ architecture), PyTorch weights .pt/.pth (+ architecture), .skops"


class UnsafeModelError(ValueError):
    """The model file is in a format that runs code when loaded, or its scan found such code."""


def _architecture(spec: str | None, path: Path) -> Any:
    if not spec:
        raise ValueError(f"{path.name} holds weights only: name the architecture that receives them "
                         "(\"package.module:factory\", a callable returning the torch.nn.Module)")
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise ValueError(f"architecture must be \"package.module:factory\", got {spec!r}")
    factory = getattr(importlib.import_module(mod), attr, None)
    if not callable(factory):
        raise ValueError(f"{spec!r} is not a callable returning a torch.nn.Module")
    return factory()


def _refuse_pickle(path: Path) -> None:
    raise UnsafeModelError(
        f"{path.name} is a pickle/joblib file: loading it runs any callable the file names (a model file can run "
        f"os.system as you: ATLAS AML.T0011.000). Save the model as {SAFE_FORMATS}; pass --allow-pickle "
        "(allow_pickle=True) only for a file you trust, which is still scanned first.")


def scan_then_unpickle(path: Path) -> Any:
    """Unpickle a trusted file after a static scan; refused when the scan finds code execution."""
    report = ArtifactScan().inspect_model(path)
    critical = [f for f in report.details["findings"] if f["severity"] == "critical"]
    if critical:
        names = ", ".join(str(f["callable"]) for f in critical)
        raise UnsafeModelError(f"{path.name} would run code when unpickled ({names}): refused even with allow_pickle")
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    import pickle

    with open(path, "rb") as fh:  # the user vouched for it and the scan found no code execution
        return pickle.load(fh)  # noqa: S301


def load_model(path: str | Path, *, architecture: str | None = None, input_shape: tuple[int, ...] | None = None,
               trusted_types: tuple[str, ...] | list[str] = (), allow_pickle: bool = False,
               onnx_output_is: str = "logits", features_output: str | None = None) -> Any:
    """The model in ``path`` as a detector-ready model (adapter or scikit-learn estimator), loaded
    without running code from the file; :class:`UnsafeModelError` for pickle/joblib (unless
    ``allow_pickle``) and ``ValueError`` for other problems, each saying what to do."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such model file: {path}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        import onnx

        onnx.checker.check_model(str(p))
        return OnnxModel(str(p), input_shape=input_shape, output_is=onnx_output_is, features_output=features_output)
    if suffix in (".safetensors", ".pt", ".pth"):
        module = _architecture(architecture, p)
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            import torch

            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - weights_only refuses anything but tensors and containers
                raise UnsafeModelError(f"{p.name} is not a plain PyTorch weights file (weights_only=True "
                                       f"refused it: {str(exc).splitlines()[0]}); save model.state_dict()") from None
        if not isinstance(state, dict):
            raise ValueError(f"{p.name} holds a {type(state).__name__}, not a state dict")
        module.load_state_dict(state)
        return TorchModel(module, input_shape=input_shape)
    if suffix == ".skops":
        import skops.io as sio

        trusted = set(SKOPS_TRUSTED) | set(trusted_types)
        untrusted = [t for t in sio.get_untrusted_types(file=p) if t not in trusted]
        if untrusted:
            raise UnsafeModelError(f"{p.name} needs types that are not trusted: {', '.join(untrusted)}; check them "
                                   "and trust each by name (--trust-type / trusted_types) if you expect it")
        return sio.load(p, trusted=sorted(trusted & set(sio.get_untrusted_types(file=p))))
    if suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{p.name}: unknown model format {suffix or '(no suffix)'}; use {SAFE_FORMATS}")
    if not allow_pickle:
        _refuse_pickle(p)
    return scan_then_unpickle(p)
