"""Safetensors files read and written one block at a time, never a second copy of the checkpoint.

Format: an 8-byte little-endian header length, a JSON header (name -> {"dtype", "shape",
"data_offsets"}), then row-major data. Reads use `os.pread` into fresh 64-byte-aligned buffers;
mmap'd pages would stay resident.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}  # fmt: skip
NAMES = {dtype: name for name, dtype in DTYPES.items()}

CHUNK_BYTES = 64 * 2**20  # rows read per pread (one block of a large tensor at a time)
ALIGNMENT = 64


def aligned_empty(shape: Sequence[int], dtype) -> np.ndarray:
    """An uninitialised array whose data starts on an ALIGNMENT-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def read_header(path: str) -> tuple[dict, int]:
    """(tensor name -> {"dtype", "shape", "data_offsets"}, byte offset of the data) of a file;
    ValueError for a short or unreadable header or an unsupported dtype."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: unreadable safetensors header ({error})") from error
    header.pop("__metadata__", None)
    for name, entry in header.items():
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {entry['dtype']}, which this "
                             f"reader does not support ({sorted(DTYPES)})")
    return header, 8 + length


class SafetensorsDir(Mapping[str, np.ndarray]):
    """Read-on-demand view of a checkpoint directory's tensors (one file or shards); only headers
    are read up front. FileNotFoundError without weights; ValueError for a tensor no shard holds."""

    def __init__(self, path: str | os.PathLike):
        path = os.fspath(path)
        index_file = os.path.join(path, "model.safetensors.index.json")
        listed: set[str] = set()
        if os.path.exists(index_file):
            with open(index_file) as f:
                weight_map = json.load(f)["weight_map"]
            files, listed = sorted(set(weight_map.values())), set(weight_map)
        elif os.path.exists(os.path.join(path, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(
                f"no model.safetensors or model.safetensors.index.json in {path!r}"
            )
        self._files: dict[str, int] = {}  # file path -> descriptor
        self._where: dict[str, tuple[str, dict, int]] = {}  # key -> (file, entry, data start)
        for name in files:
            file = os.path.join(path, name)
            header, start = read_header(file)
            self._files[file] = os.open(file, os.O_RDONLY)
            self._where.update({key: (file, entry, start) for key, entry in header.items()})
        missing = sorted(listed - set(self._where))
        if missing:
            self.close()
            raise ValueError(f"{index_file} lists tensors that no shard holds: {missing[:10]}")

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of tensor `key`, from the file header (nothing is read)."""
        return tuple(self._where[key][1]["shape"])

    def dtype(self, key: str) -> np.dtype:
        return DTYPES[self._where[key][1]["dtype"]]

    def read_rows(self, key: str, rows: slice) -> np.ndarray:
        """Rows `rows` (a step-1 slice of the first axis) of tensor `key`, in a fresh buffer."""
        file, entry, start = self._where[key]
        shape, dtype = self.shape(key), self.dtype(key)
        if not shape:
            first, last = 0, 1
        else:
            first, last, step = rows.indices(shape[0])
            if step != 1:
                raise ValueError(f"read_rows({key!r}): step {step}; only contiguous rows")
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        out = aligned_empty((max(last - first, 0), *shape[1:]) if shape else (), dtype)
        offset = start + entry["data_offsets"][0] + first * row_bytes
        view, done = memoryview(out.reshape(-1).view(np.uint8)), 0
        while done < out.nbytes:
            got = os.preadv(self._files[file], [view[done:]], offset + done)
            if got <= 0:
                raise ValueError(f"{file}: tensor {key!r} ends before its declared size")
            done += got
        return out

    def __getitem__(self, key: str) -> np.ndarray:
        return self.read_rows(key, slice(None))

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files, self._where = {}, {}

    def __enter__(self) -> SafetensorsDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# A tensor to write: (name, shape, dtype, a function that yields its row-major blocks).
TensorSpec = tuple[str, tuple[int, ...], np.dtype, Callable[[], Iterable[np.ndarray]]]


def write_safetensors(path: str, specs: Sequence[TensorSpec],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes one safetensors file, header first, then each tensor's blocks in turn; ValueError when
    a tensor's blocks do not add up to its declared size."""
    header, offset = {}, 0
    for name, shape, dtype, _ in specs:
        size = math.prod(shape) * np.dtype(dtype).itemsize
        header[name] = {"dtype": NAMES[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, dtype, blocks in specs:
            written = 0
            for block in blocks():
                block = np.ascontiguousarray(block, dtype=dtype)
                f.write(memoryview(block.reshape(-1).view(np.uint8)))
                written += block.nbytes
            expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if written != expected:
                raise ValueError(f"{path}: tensor {name!r} wrote {written} bytes, its shape "
                                 f"{shape} needs {expected}")


def row_blocks(array, rows_per_block: int | None = None) -> Iterator[np.ndarray]:
    """`array` in blocks of whole rows, about CHUNK_BYTES each (or `rows_per_block` rows)."""
    array = np.asarray(array)
    if array.ndim == 0:
        yield array
        return
    row_bytes = max(array[:1].nbytes, 1)
    step = rows_per_block or max(1, CHUNK_BYTES // row_bytes)
    for first in range(0, len(array), step):
        yield array[first:first + step]
