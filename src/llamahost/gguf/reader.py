"""Reading GGUF headers without loading weights.

Every count and length is checked against the bytes actually left in the file before
anything is allocated, so a truncated, corrupt or hostile file raises ``InvalidModelError``
naming the path and the field, and never makes us allocate gigabytes or read forever.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core import _native
from ..errors import InvalidModelError
from . import preflight
from .tensors import GGML_TYPES, TensorInfo

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
ARRAY_PREVIEW = 8  # items of a long metadata array kept in its summary
SMALL_ARRAY = 1024  # numeric arrays up to this length (per-layer values) are kept whole

# GGUF metadata value types: id -> (struct format, size); 8 = string, 9 = array
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 63  # GGML_MAX_NAME less its terminating NUL
TOKENS_KEY = "tokenizer.ggml.tokens"


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array described, not copied: its item type, length and first items."""

    item_type: str
    length: int
    head: tuple

    def __repr__(self) -> str:
        return f"<array of {self.length} {self.item_type}: {list(self.head)}{'...' if self.length > len(self.head) else ''}>"


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int


# keys llama.cpp reads with a fixed type and no check of the file's: llama-model-loader.cpp reads
# each later part's split.no with gguf_get_val_u16, which asserts the type (found by the fuzzer)
FIXED_TYPES = {"split.no": 2}


def _type_name(type_id: int) -> str:
    if type_id in _SCALARS:
        return {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
                7: "bool", 10: "uint64", 11: "int64", 12: "float64"}[type_id]
    return {_STRING: "string", _ARRAY: "array"}.get(type_id, f"type {type_id}")


class HeaderIncomplete(Exception):
    """The first bytes of a file end before its header does: ``needed`` bytes are wanted."""

    def __init__(self, needed: int):
        super().__init__(f"the header needs at least {needed} bytes")
        self.needed = needed


class _Reader:
    def __init__(self, buf, path: Path, file_size: int | None = None):
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.file_size = len(buf) if file_size is None else file_size  # more than size: buf is the file's start
        self.path = path

    def fail(self, what: str, why: str) -> InvalidModelError:
        return InvalidModelError(self.path, f"{what}: {why} (at byte {self.pos} of {self.size})")

    def need(self, n: int, what: str) -> None:
        if 0 <= n and self.size < self.pos + n <= self.file_size:
            raise HeaderIncomplete(self.pos + n)
        if n < 0 or self.pos + n > self.size:
            raise self.fail(what, f"needs {n} more bytes but the file ends first (truncated?)")

    def scalar(self, fmt: str, n: int, what: str):
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(f"{what} length")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(what, f"not valid UTF-8 ({exc.reason})") from None

    def skip_strings(self, count: int, what: str) -> None:
        pos = _native.skip_gguf_strings(self.buf, self.pos, count)
        if pos < 0 and self.size < self.file_size:
            raise HeaderIncomplete(self.size + 1)
        if pos < 0:
            raise self.fail(what, "a string runs past the end of the file (truncated?)")
        self.pos = pos

    def value(self, type_id: int, what: str):
        if type_id in _SCALARS:
            fmt, n = _SCALARS[type_id]
            return self.scalar(fmt, n, what)
        if type_id == _STRING:
            return self.string(what)
        if type_id == _ARRAY:
            item_type = self.u32(f"{what} item type")
            count = self.u64(f"{what} length")
            if item_type == _ARRAY:
                raise self.fail(what, "nested arrays are not supported")
            if item_type in _SCALARS:
                fmt, n = _SCALARS[item_type]
                self.need(count * n, f"{what} ({count} items)")
                whole = count <= SMALL_ARRAY
                items = struct.unpack_from(f"<{count if whole else ARRAY_PREVIEW}{fmt[1]}", self.buf, self.pos)
                self.pos += count * n
                if whole:
                    return list(items)
            elif item_type == _STRING:
                # each string has at least its 8-byte length, so count is bounded by the bytes left
                self.need(count * 8, f"{what} ({count} strings)")
                kept = min(count, ARRAY_PREVIEW)
                items = [self.string(f"{what}[{i}]") for i in range(kept)]
                self.skip_strings(count - kept, what)
            else:
                raise self.fail(what, f"unknown array item type {item_type}")
            return ArraySummary(_type_name(item_type), count, tuple(items[:ARRAY_PREVIEW]))
        raise self.fail(what, f"unknown value type {type_id}")


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse and check a GGUF file's header, metadata and tensor table.

    Long arrays (vocabularies) are summarised, not copied. Raises FileNotFoundError for
    a missing file, InvalidModelError for anything malformed. A file is read once per
    size and modification time (a start reads it several times); the header returned is
    shared: do not modify it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise InvalidModelError(path, "is a directory, not a GGUF file")
    stat = path.stat()
    return _read_header(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _read_header(path: Path, size: int, mtime_ns: int) -> GGUFHeader:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            head = fh.read(4)
            if head != GGUF_MAGIC:
                raise InvalidModelError(path, f"not a GGUF file (starts with {head!r}, expected {GGUF_MAGIC!r})")
            raise InvalidModelError(path, f"truncated: {size} bytes is too short for a GGUF header")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return _parse(_Reader(view, path))
            finally:
                view.release()  # before the mapping closes, even when an error holds the reader


def read_header_prefix(data: bytes, file_size: int, path: str | os.PathLike) -> GGUFHeader:
    """Parse and check a GGUF header from the first bytes of a file of ``file_size`` bytes (a
    remote file's start, say). HeaderIncomplete when they end before the tensor table does."""
    return _parse(_Reader(memoryview(data), Path(path), file_size))


def _parse(r: _Reader) -> GGUFHeader:
    try:
        magic = bytes(r.buf[0:4])
        if magic != GGUF_MAGIC:
            raise r.fail("magic", f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
        r.pos = 4
        version = r.u32("version")
        if version not in SUPPORTED_VERSIONS:
            raise r.fail("version", f"GGUF version {version} is not supported (expected 2 or 3)")
        n_tensors = r.u64("tensor count")
        n_kv = r.u64("metadata count")
        # a key/value takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor 8 + 4 + 4 + 8
        if n_kv * 13 > r.file_size - r.pos:
            raise r.fail("metadata count", f"{n_kv} entries cannot fit in the file")
        if n_tensors * 24 > r.file_size - r.pos:
            raise r.fail("tensor count", f"{n_tensors} tensors cannot fit in the file")

        metadata: dict[str, Any] = {}
        tokens_at = None
        for i in range(n_kv):
            key = r.string(f"metadata key #{i}")
            if key in metadata:
                raise r.fail(f"metadata key #{i}", f"{key!r} appears twice")
            type_id = r.u32(f"metadata {key!r} type")
            if key in FIXED_TYPES and type_id != FIXED_TYPES[key]:
                raise r.fail(f"metadata {key!r}", f"of type {_type_name(type_id)}, where llama.cpp reads a "
                                                  f"{_type_name(FIXED_TYPES[key])} without checking (an abort)")
            if key == TOKENS_KEY and type_id == _ARRAY:
                tokens_at = r.pos
            metadata[key] = r.value(type_id, f"metadata {key!r}")

        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise r.fail("general.alignment", f"{alignment!r} is not a power of two")

        infos = []
        names = set()
        for i in range(n_tensors):
            name = r.string(f"tensor #{i} name")
            if len(name.encode()) > MAX_NAME or name in names:
                raise r.fail(f"tensor #{i} name", f"{name[:80]!r} is {'a duplicate' if name in names else 'too long'}")
            names.add(name)
            n_dims = r.u32(f"tensor {name!r} dimension count")
            if n_dims == 0 or n_dims > MAX_DIMS:
                raise r.fail(f"tensor {name!r}", f"{n_dims} dimensions (ggml has 1 to {MAX_DIMS})")
            r.need(8 * n_dims, f"tensor {name!r} shape")
            shape = struct.unpack_from(f"<{n_dims}Q", r.buf, r.pos)
            r.pos += 8 * n_dims
            type_id = r.u32(f"tensor {name!r} type")
            offset = r.u64(f"tensor {name!r} offset")
            if type_id not in GGML_TYPES:
                raise r.fail(f"tensor {name!r}", f"unknown tensor type {type_id}")
            infos.append((name, shape, type_id, offset))

        data_offset = (r.pos + alignment - 1) // alignment * alignment
        data_size = r.file_size - data_offset
        tensors = []
        for name, shape, type_id, offset in infos:
            type_name, block, block_bytes = GGML_TYPES[type_id]
            n_elements = 1
            for d in shape:
                n_elements *= d
            if n_elements >= 1 << 63:  # ggml counts elements in an int64_t
                raise r.fail(f"tensor {name!r}", f"shape {list(shape)} has more elements than ggml can count")
            if shape[0] % block:
                raise r.fail(f"tensor {name!r}", f"first dimension {shape[0]} is not a multiple of {type_name}'s block of {block}")
            nbytes = n_elements // block * block_bytes
            if offset % alignment:
                raise r.fail(f"tensor {name!r}", f"data offset {offset} is not aligned to {alignment}")
            if offset + nbytes > data_size:
                raise InvalidModelError(
                    r.path,
                    f"tensor {name!r}: its data ({nbytes} bytes at offset {offset}) runs past the end of "
                    f"the file, which has {data_size} bytes of tensor data (truncated?)")
            tensors.append(TensorInfo(name, tuple(shape), type_name, offset, nbytes))
        _check_overlaps(r.path, tensors)
        tokens = metadata.get(TOKENS_KEY)
        if tokens_at is not None and isinstance(tokens, ArraySummary) and tokens.item_type == "string":
            preflight.check_vocabulary(r.path, r.buf, tokens_at + 12, tokens.length)  # after item type and count
        preflight.check(r.path, metadata, tensors)
        return GGUFHeader(r.path, version, metadata, tensors, data_offset, r.file_size)
    except (InvalidModelError, HeaderIncomplete):
        raise
    except (struct.error, ValueError, OverflowError, MemoryError) as exc:
        raise r.fail("header", f"malformed ({exc})") from None


def _check_overlaps(path: Path, tensors: list[TensorInfo]) -> None:
    ordered = sorted(tensors, key=lambda t: t.offset)
    for prev, cur in zip(ordered, ordered[1:]):
        if cur.offset < prev.offset + prev.nbytes:
            raise InvalidModelError(path, f"tensor {cur.name!r} overlaps tensor {prev.name!r} in the data section")

