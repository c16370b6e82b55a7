"""Open Inference Protocol (KServe v2 REST) tensors: JSON ``{"name", "shape", "datatype", "data"}``
to numpy and back, and the binary tensor data extension (Triton's HTTP clients send inputs this way
by default): the body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the
raw tensors, in tensor order, each one ``parameters.binary_data_size`` bytes of little-endian
row-major values in place of ``data``.

The sensor decodes what clients send and what the model server answers. Clients are untrusted, so
every check is explicit: the shape is a short list of non-negative integers, the element count is
bounded, ``data`` is flat or nested exactly like ``shape``, each value fits the datatype (no NaN or
infinity, no booleans posing as numbers, integers within range). Anything else raises
:class:`TensorError` with a message fit for the protocol's ``{"error": ...}`` answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

__all__ = ["DATATYPES", "HEADER_LENGTH", "InferRequest", "InferResponse", "Tensor", "TensorError", "decode_request",
           "decode_response", "encode_tensor", "parse_json", "split_body"]

#: the binary extension's HTTP header: length of the JSON part at the start of the body
HEADER_LENGTH = "inference-header-content-length"

#: protocol datatype -> numpy dtype of the numeric tensors detectors read (BYTES tensors are decoded to
#: arrays of ``bytes`` objects, so a request or answer that carries one alongside is still read)
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16), "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 22
MAX_NAME = 256
MAX_BYTES_TOTAL = 1 << 26  # bytes held by one BYTES tensor
MAX_BYTES_ELEMENTS = 1 << 16  # elements of one BYTES tensor (each is a Python object)


class TensorError(ValueError):
    """A request or response the sensor cannot read; ``str()`` is the protocol error message."""


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray  # shaped as ``shape``, dtype of ``datatype``

    def rows(self) -> np.ndarray:
        """One float64 row per item of the batch (first dimension); a scalar tensor is one row."""
        if self.datatype == "BYTES":
            raise TensorError(f"tensor {self.name!r} is BYTES: the sensor's detectors read numeric tensors "
                              f"(name a numeric input or output in the sensor's config)")
        a = self.array.astype(np.float64, copy=False)
        if a.ndim == 0:
            return a.reshape(1, 1)
        return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[str] = field(default_factory=list)  # requested output names (empty: server default)
    id: str | None = None

    def input(self, name: str | None = None) -> Tensor:
        if name is None:
            return self.inputs[0]
        for t in self.inputs:
            if t.name == name:
                return t
        raise TensorError(f"request has no input named {name!r}")


@dataclass
class InferResponse:
    outputs: list[Tensor]
    model_name: str | None = None
    id: str | None = None

    def output(self, name: str | None) -> Tensor | None:
        """The output called ``name``; None: the first numeric one."""
        for t in self.outputs:
            if t.name == name or (name is None and t.datatype != "BYTES"):
                return t
        return None


def parse_json(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity; nesting bounded by the parser) or :class:`TensorError`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TensorError(f"body is not valid JSON: {exc}") from None


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview | None]:
    """(parsed JSON header, binary tail) of a body; ``header_length`` is the value of the
    ``Inference-Header-Content-Length`` header, None for a plain JSON body (no tail)."""
    if header_length is None:
        return parse_json(body), None
    try:
        n = int(header_length.strip())
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise TensorError(f"Inference-Header-Content-Length {header_length[:40]!r} is not a length within the body")
    return parse_json(body[:n]), memoryview(body)[n:]


class _Tail:
    """The binary part of a body, read tensor by tensor; all of it must be used."""

    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def take(self, size: Any, where: str) -> memoryview:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise TensorError(f"{where}: parameters.binary_data_size must be a non-negative integer")
        if self.pos + size > len(self.data):
            raise TensorError(f"{where}: binary_data_size {size} runs past the end of the body")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def done(self) -> None:
        if self.pos != len(self.data):
            raise TensorError(f"{len(self.data) - self.pos} bytes after the last binary tensor")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise TensorError(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise TensorError(f"{where}: shape must be a list of at most {MAX_DIMS} integers")
    dims = []
    total = 1
    for d in value:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise TensorError(f"{where}: shape must hold non-negative integers; got {d!r}")
        dims.append(d)
        total *= d
        if total > MAX_ELEMENTS:
            raise TensorError(f"{where}: shape {value} holds more than {MAX_ELEMENTS} elements")
    return tuple(dims)


def _flatten(data: Any, shape: tuple[int, ...], where: str) -> list[Any]:
    """``data`` as a flat list: either already flat, or nested exactly as ``shape``."""
    if not isinstance(data, list):
        if shape == () or shape == (1,):
            return [data]
        raise TensorError(f"{where}: data must be a list")
    if all(not isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack: list[tuple[list, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth >= len(shape) or len(node) != shape[depth]:
            raise TensorError(f"{where}: nested data does not match shape {list(shape)}")
        if depth == len(shape) - 1:
            if any(isinstance(v, list) for v in node):
                raise TensorError(f"{where}: nested data is deeper than shape {list(shape)}")
            out.extend(node)
        else:
            for child in reversed(node):
                if not isinstance(child, list):
                    raise TensorError(f"{where}: nested data does not match shape {list(shape)}")
                stack.append((child, depth + 1))
    return out


def _values(flat: list[Any], datatype: str, where: str) -> np.ndarray:
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise TensorError(f"{where}: BOOL data must hold true/false only")
        return np.array(flat, dtype=np.bool_)
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in flat):
        raise TensorError(f"{where}: {datatype} data must hold numbers only")
    if dtype.kind in "iu":
        if not all(isinstance(v, int) for v in flat):
            raise TensorError(f"{where}: {datatype} data must hold integers only")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise TensorError(f"{where}: a value is outside the range of {datatype}")
        return np.array(flat, dtype=dtype)
    arr = np.array(flat, dtype=np.float64)
    if arr.size and float(np.max(np.abs(arr))) > float(np.finfo(dtype).max):
        raise TensorError(f"{where}: a value is outside the range of {datatype}")
    return arr.astype(dtype)


def decode_tensor(obj: Any, where: str = "tensor", tail: _Tail | None = None) -> Tensor:
    if not isinstance(obj, dict):
        raise TensorError(f"{where} must be a JSON object")
    name = _text(obj.get("name"), f"{where}.name")
    where = f"{where} {name!r}"
    datatype = obj.get("datatype")
    if not isinstance(datatype, str) or (datatype not in DATATYPES and datatype != "BYTES"):
        raise TensorError(f"{where}: datatype must be one of {', '.join(DATATYPES)}, BYTES")
    shape = _shape(obj.get("shape"), where)
    n = 1
    for d in shape:
        n *= d
    if datatype == "BYTES" and n > MAX_BYTES_ELEMENTS:
        raise TensorError(f"{where}: a BYTES tensor of more than {MAX_BYTES_ELEMENTS} elements")
    params = obj.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if "data" not in obj and size is not None:
        if tail is None:
            raise TensorError(f"{where}: binary_data_size without Inference-Header-Content-Length")
        chunk = tail.take(size, where)
        values = _binary_bytes(chunk, n, where) if datatype == "BYTES" else _binary_values(chunk, n, datatype, where)
        return Tensor(name, datatype, shape, values.reshape(shape))
    if "data" not in obj:
        raise TensorError(f"{where}: no data")
    flat = _flatten(obj["data"], shape, where)
    if len(flat) != n:
        raise TensorError(f"{where}: data holds {len(flat)} values; shape {list(shape)} needs {n}")
    values = _text_bytes(flat, where) if datatype == "BYTES" else _values(flat, datatype, where)
    return Tensor(name, datatype, shape, values.reshape(shape))


def _bytes_array(items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _text_bytes(flat: list[Any], where: str) -> np.ndarray:
    """JSON BYTES elements: strings (kept as their UTF-8 bytes)."""
    if not all(isinstance(v, str) for v in flat):
        raise TensorError(f"{where}: BYTES data must hold strings only")
    items = [v.encode("utf-8", errors="surrogatepass") for v in flat]
    if sum(map(len, items)) > MAX_BYTES_TOTAL:
        raise TensorError(f"{where}: BYTES data holds more than {MAX_BYTES_TOTAL} bytes")
    return _bytes_array(items)


def _binary_bytes(chunk: memoryview, n: int, where: str) -> np.ndarray:
    """Binary BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    items: list[bytes] = []
    pos = 0
    for _ in range(n):
        if pos + 4 > len(chunk):
            raise TensorError(f"{where}: BYTES binary data ends inside an element's length")
        size = int.from_bytes(chunk[pos:pos + 4], "little")
        pos += 4
        if pos + size > len(chunk):
            raise TensorError(f"{where}: a BYTES element runs past its binary_data_size")
        items.append(bytes(chunk[pos:pos + size]))
        pos += size
    if pos != len(chunk):
        raise TensorError(f"{where}: {len(chunk) - pos} bytes after the last BYTES element")
    return _bytes_array(items)


def _binary_values(chunk: memoryview, n: int, datatype: str, where: str) -> np.ndarray:
    """Raw little-endian values, held to the same rules as JSON data (finite, booleans 0/1)."""
    dtype = DATATYPES[datatype]
    if len(chunk) != n * dtype.itemsize:
        raise TensorError(f"{where}: {len(chunk)} bytes of binary data; shape needs {n * dtype.itemsize}")
    if datatype == "BOOL":
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise TensorError(f"{where}: BOOL data must hold 0/1 bytes only")
        return raw.astype(np.bool_)
    arr = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype)
    if dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise TensorError(f"{where}: binary data holds NaN or infinity")
    return arr


def _tensors(obj: dict, key: str, binary: memoryview | bytes | None) -> list[Tensor]:
    items = obj.get(key)
    if not isinstance(items, list) or not items:
        raise TensorError(f"'{key}' must be a non-empty list of tensors")
    tail = None if binary is None else _Tail(memoryview(binary))
    tensors = [decode_tensor(t, f"{key}[{i}]", tail) for i, t in enumerate(items)]
    if tail is not None:
        tail.done()
    return tensors


def _optional_id(obj: dict) -> str | None:
    rid = obj.get("id")
    return rid if isinstance(rid, str) and len(rid) <= MAX_NAME else None


def decode_request(obj: Any, binary: memoryview | bytes | None = None) -> InferRequest:
    """A parsed infer request body (and its binary tail, when the body had one) ->
    :class:`InferRequest`; raises :class:`TensorError`."""
    if not isinstance(obj, dict):
        raise TensorError("request body must be a JSON object")
    outputs = obj.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise TensorError("'outputs' must be a list of objects")
    names = [_text(o.get("name"), f"outputs[{i}].name") for i, o in enumerate(outputs)]
    return InferRequest(_tensors(obj, "inputs", binary), names, _optional_id(obj))


def decode_response(obj: Any, binary: memoryview | bytes | None = None) -> InferResponse:
    """A parsed infer response body (and its binary tail, when the body had one) ->
    :class:`InferResponse`; raises :class:`TensorError`."""
    if not isinstance(obj, dict):
        raise TensorError("response body must be a JSON object")
    name = obj.get("model_name")
    return InferResponse(_tensors(obj, "outputs", binary), name if isinstance(name, str) else None,
                         _optional_id(obj))


def encode_tensor(name: str, array: Any, datatype: str | None = None) -> dict[str, Any]:
    """A numpy array as a protocol tensor (flat row-major ``data``)."""
    a = np.asarray(array)
    if datatype is None:
        datatype = next((k for k, v in DATATYPES.items() if v == a.dtype), "FP64")
        if a.dtype != DATATYPES[datatype]:
            a = a.astype(np.float64)
    return {"name": name, "shape": list(a.shape), "datatype": datatype,
            "data": a.astype(DATATYPES[datatype]).reshape(-1).tolist()}
