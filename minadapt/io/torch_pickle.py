"""Reading PyTorch's `.bin` files (`torch.save(state_dict, path)`) without torch, and without
running any code a file might carry.

AdapterHub's default `save_adapter` writes `pytorch_adapter.bin` and `pytorch_model_head.bin`;
PEFT's older default is `adapter_model.bin`. Each is a pickled dict {name: tensor}. A pickle is a
small program: its GLOBAL opcode imports any callable by name and REDUCE calls it, so loading an
untrusted pickle with `pickle.load` can run `os.system(...)`. The unpickler here resolves globals
from a short table instead of importing them, as `torch.load(weights_only=True)` does:

    collections.OrderedDict          the state dict itself
    torch._utils._rebuild_tensor_v2  (storage, offset, size, stride, ...) -> a view of the storage
    torch._utils._rebuild_parameter  (tensor, requires_grad, hooks) -> the tensor
    torch.FloatStorage, ...          which dtype a storage holds

Every other global raises WeightsError naming it. The storages themselves are raw little-endian
bytes outside the pickle; the pickle names them through `persistent_load` ids
`('storage', StorageType, key, location, numel)`. Two layouts hold those bytes:

    zip (torch >= 1.6):  ARCHIVE/data.pkl, ARCHIVE/data/KEY (one file per storage), ARCHIVE/byteorder
    legacy (torch < 1.6, `_use_new_zipfile_serialization=False`): five pickles in a row (magic
        number, protocol version, sys info, the object, the storage keys), then for each key an
        int64 element count and the storage's bytes.

A tensor is `as_strided(storage[offset:], size, stride)` in elements; copied out so the result
does not keep the whole storage alive. bfloat16, which NumPy lacks, becomes float32 (its 16 bits
are a float32's upper half, so the widening is exact).
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
BFLOAT16 = "bfloat16"  # a marker: read as uint16, widened to float32 after the view is built

STORAGE_DTYPES = {  # torch's legacy storage class name -> the NumPy dtype of its elements
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": BFLOAT16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """What the pickle's `torch.FloatStorage` global resolves to: only its dtype is used."""

    def __init__(self, dtype):
        self.dtype = dtype


class _Storage:
    """One storage's elements, read when first needed, as a flat NumPy array."""

    def __init__(self, dtype, numel: int, read_bytes):
        self.dtype, self.numel, self._read, self._array = dtype, numel, read_bytes, None

    def array(self) -> np.ndarray:
        if self._array is None:
            np_dtype = np.dtype(np.uint16 if self.dtype == BFLOAT16 else self.dtype).newbyteorder("<")
            raw = self._read(self.numel * np_dtype.itemsize)
            self._array = np.frombuffer(raw, dtype=np_dtype, count=self.numel)
        return self._array


class _Tensor:
    """A tensor as the pickle describes it; its bytes are read by `numpy()`, after the pickle (the
    legacy layout stores them behind it)."""

    def __init__(self, storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def numpy(self) -> np.ndarray:
        """`size` elements of the storage from `offset`, `stride` apart, as a fresh native-order array."""
        flat, size, stride = self.storage.array(), self.size, self.stride
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride))
        if self.offset < 0 or min(stride, default=0) < 0 or (all(size) and last >= flat.size):
            raise pickle.UnpicklingError(f"a tensor of size {size} and stride {stride} from offset {self.offset} "
                               f"reaches past its storage of {flat.size} elements")
        v = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=size,
                                            strides=tuple(s * flat.itemsize for s in stride), writeable=False)
        v = np.ascontiguousarray(v)
        if self.storage.dtype == BFLOAT16:  # the upper 16 bits of a float32
            v = (v.astype(np.uint32) << 16).view(np.float32)
        return v.astype(v.dtype.newbyteorder("="), copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2: `size` elements of `storage` from `storage_offset`, `stride` apart."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 called without a storage")
    return _Tensor(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): an nn.Parameter is its tensor here."""
    return data


ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come from ALLOWED only and whose persistent ids are storages."""

    def __init__(self, file, path, storage_bytes):
        super().__init__(file)
        self.path, self.storage_bytes, self.storages = path, storage_bytes, {}

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(
                f"{self.path}: refuses the pickle global {module}.{name}: a torch .bin file of weights "
                "needs only tensors and dicts, and loading this one would call other code (it may "
                "be malicious); minadapt will not run it. Ask for a safetensors file instead") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid[:5]
        key = key.decode() if isinstance(key, bytes) else str(key)
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 1.0 files) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(kind.dtype, int(numel), lambda n, k=key: self.storage_bytes(k, n))
        return self.storages[key]


def load_torch_bin(path) -> dict[str, np.ndarray]:
    """The {name: array} dict a `torch.save(state_dict)` file holds, read without torch and without
    running code: WeightsError for a global outside ALLOWED, a malformed file or a non-dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:  # the zip layout reads storages from it lazily: keep it open
            obj = _load_zip(path, f) if zipfile.is_zipfile(f) else _load_legacy(path, f)
            if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
                raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors (a state dict)")
            return {str(k): v.numpy() for k, v in obj.items()}
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, struct.error, zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f"{path}: not a readable torch .bin file (truncated or corrupt?): "
                           f"{type(e).__name__}: {e}") from None


def _load_zip(path: Path, f):
    z = zipfile.ZipFile(f)
    names = z.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise WeightsError(f"{path}: a zip file without ARCHIVE/data.pkl is not a torch.save file")
    root = pkl[0][: -len("data.pkl")]
    if root + "byteorder" in names and z.read(root + "byteorder").strip() != b"little":
        raise WeightsError(f"{path}: saved on a big-endian machine; minadapt reads little-endian files")

    def storage_bytes(key, nbytes):
        raw = z.read(f"{root}data/{key}")
        if len(raw) < nbytes:
            raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, expected {nbytes}")
        return raw

    return _Unpickler(io.BytesIO(z.read(pkl[0])), path, storage_bytes).load()


def _load_legacy(path: Path, f):
    f.seek(0)
    if _Unpickler(f, path, None).load() != LEGACY_MAGIC:
        raise WeightsError(f"{path}: neither a zip nor a legacy torch.save file (no torch magic number)")
    if (protocol := _Unpickler(f, path, None).load()) != LEGACY_PROTOCOL:
        raise WeightsError(f"{path}: legacy torch.save protocol {protocol!r}, expected {LEGACY_PROTOCOL}")
    _Unpickler(f, path, None).load()  # sys info: byte order and type sizes of the saving machine
    loaded = {}
    unpickler = _Unpickler(f, path, lambda key, nbytes: loaded[key])
    obj = unpickler.load()
    keys = _Unpickler(f, path, None).load()
    for key in keys:  # each: an int64 element count, then the storage's bytes
        numel = struct.unpack("<q", f.read(8))[0]
        storage = unpickler.storages[str(key)]
        itemsize = 2 if storage.dtype == BFLOAT16 else np.dtype(storage.dtype).itemsize
        if numel != storage.numel:
            raise pickle.UnpicklingError(f"storage {key}: {numel} elements, the pickle says {storage.numel}")
        loaded[str(key)] = f.read(numel * itemsize)
        if len(loaded[str(key)]) < numel * itemsize:
            raise EOFError(f"storage {key} ends early")
    return obj
