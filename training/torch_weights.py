"""Read a PyTorch ``state_dict`` file into NumPy arrays without PyTorch.

Two on-disk layouts exist:

* the legacy one (``torch.save`` before 1.6, or ``_use_new_zipfile_serialization=False``): five pickles
  in a row - magic number, protocol version, system info, the object, the list of storage keys - then,
  for each key in that list, an int64 element count followed by the storage's raw bytes;
* the zip one: ``<archive>/data.pkl`` holds the object and ``<archive>/data/<key>`` each storage's bytes.

Both pickles refer to storages by persistent id and rebuild tensors with
``torch._utils._rebuild_tensor_v2``. The unpickler here resolves only that function, the storage type
names and ``collections.OrderedDict``; any other global is refused, so a weights file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Storage class name -> NumPy dtype (little-endian, as written on every platform PyTorch supports).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeWeightsFile(pickle.UnpicklingError):
    """The file asks for a Python global that a plain tensor dictionary never needs."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _StorageRef:
    """A storage named in the pickle; its bytes are read later (legacy) or from the archive (zip)."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        """Copy the tensor's elements out of its storage (views share storages, so always copy)."""
        flat = self.storage.data
        if flat is None:
            raise ValueError(f"storage {self.storage.key!r} was never read")
        if not self.shape:
            return np.array(flat[self.offset])
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if self.offset < 0 or last >= flat.size or any(s < 0 for s in self.stride):
            raise ValueError(f"tensor reaches outside storage {self.storage.key!r}")
        start = flat[self.offset:]
        strides = tuple(s * flat.itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(start, shape=self.shape, strides=strides).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: remember where the tensor lives."""
    if not isinstance(storage, _StorageRef):
        raise UnsafeWeightsFile("a tensor must be built on a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter`` (an ``nn.Parameter`` is just its tensor here)."""
    if not isinstance(data, _TensorRef):
        raise UnsafeWeightsFile("a parameter must wrap a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Resolves tensors and storages only; keeps every storage it meets in ``storages``."""

    def __init__(self, handle, storages: dict[str, _StorageRef]):
        super().__init__(handle)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeWeightsFile(f"refusing global {module}.{name} in a weights file") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeWeightsFile(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeWeightsFile(f"unexpected storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise UnsafeWeightsFile("storage views (pre-1.0 files) are not supported")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _StorageRef(key, storage_type.dtype, int(numel))
        return self.storages[key]


def _materialize(obj):
    """Replace every tensor reference inside the unpickled object by its NumPy array."""
    if isinstance(obj, _TensorRef):
        return obj.materialize()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _read_legacy(handle) -> object:
    storages: dict[str, _StorageRef] = {}
    magic = _Unpickler(handle, storages).load()
    if magic != LEGACY_MAGIC:
        raise ValueError("not a PyTorch weights file (bad magic number)")
    protocol = _Unpickler(handle, storages).load()
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"unsupported PyTorch legacy protocol {protocol!r}")
    system = _Unpickler(handle, storages).load()
    if not system.get("little_endian", True):
        raise ValueError("big-endian PyTorch files are not supported")
    result = _Unpickler(handle, storages).load()
    keys = _Unpickler(handle, storages).load()
    for key in keys:
        storage = storages[str(key)]
        (count,) = struct.unpack("<q", handle.read(8))
        if count != storage.numel:
            raise ValueError(f"storage {key!r}: {count} elements on disk, {storage.numel} expected")
        raw = handle.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise ValueError(f"storage {key!r} is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return result


def _read_zip(path: Path) -> object:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and archive.read(byteorder).strip() != b"little":
            raise ValueError("big-endian PyTorch files are not supported")
        storages: dict[str, _StorageRef] = {}
        result = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise ValueError(f"storage {key!r} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)
    return result


def load_state_dict(path: str | Path) -> collections.OrderedDict[str, np.ndarray]:
    """Read a ``torch.save``-d state dict as NumPy arrays, in the file's order.

    Args:
        path: A ``.pth`` / ``.pt`` file in the legacy or the zip format.

    Returns:
        Parameter name -> array (a copy, writable, in the tensor's own shape and dtype).

    Raises:
        UnsafeWeightsFile: The file names a global other than tensors, storages and ``OrderedDict``.
        ValueError: Not a PyTorch file, or a truncated or inconsistent one.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        result = _read_zip(path)
    else:
        with path.open("rb") as handle:
            result = _read_legacy(handle)
    if not isinstance(result, dict):
        raise ValueError(f"{path} holds a {type(result).__name__}, not a state dict")
    return _materialize(result)
