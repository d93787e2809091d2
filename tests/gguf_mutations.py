"""Structure-aware mutations of GGUF files, for fuzzing.

``Layout(data)`` locates every field of a GGUF (read once with the ``gguf`` package's
reader): the header counts, each metadata key/value and tensor record, and within them
each integer (lengths, counts, type ids, dimensions, offsets, scalar values) and each run
of bytes (keys, strings). ``mutate(rng, data, layout)`` applies one to three mutations
chosen by ``rng`` (a ``random.Random``): so a case is reproduced by its seed alone.

The mutations: truncations, flipped bytes, absurd integers (counts, lengths, dimensions,
hyperparameters), wrong type ids, huge or invalid UTF-8 strings, tensors made to
overlap, and metadata or tensor records deleted or duplicated.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType

U32_EDGES = (0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 31, 32, 64, 255, 4096, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
U64_EDGES = (0, 1, 2, 8, 1 << 20, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 62), (1 << 63) - 1,
             1 << 63, (1 << 64) - 2, (1 << 64) - 1)
F32_EDGES = (0.0, -0.0, -1.0, 1e-45, 1e30, -1e30, float("inf"), float("-inf"), float("nan"))


@dataclass(frozen=True)
class Slot:
    """One part of a field: ``size`` bytes at ``pos``; ``kind`` is a struct format
    (``<I``, ``<Q``, ``<f``, ...) for a number, or ``bytes``."""

    pos: int
    size: int
    kind: str
    role: str  # "count", "length", "type", "dim", "offset", "value", "text"


@dataclass
class Record:
    """A metadata key/value or a tensor's info: its byte span and slots."""

    start: int
    end: int
    slots: list[Slot]
    is_tensor: bool


@dataclass
class Layout:
    data_offset: int  # where tensor data starts (the end of the header)
    size: int
    counts: list[Slot]  # tensor count, metadata count
    records: list[Record] = field(default_factory=list)

    def slots(self, role: str | None = None) -> list[Slot]:
        return [s for r in self.records for s in r.slots if role is None or s.role == role]


_FORMATS = {np.dtype(np.uint8): "<B", np.dtype(np.int8): "<b", np.dtype(np.uint16): "<H", np.dtype(np.int16): "<h",
            np.dtype(np.uint32): "<I", np.dtype(np.int32): "<i", np.dtype(np.uint64): "<Q",
            np.dtype(np.int64): "<q", np.dtype(np.float32): "<f", np.dtype(np.float64): "<d",
            np.dtype(np.bool_): "<?"}
MAX_SLOTS_PER_RECORD = 64  # a vocabulary's 100k strings: a sample is enough


def _kv_roles(types: list[GGUFValueType], n_parts: int) -> list[str]:
    """What each part of a metadata field is: key length, key, type, then the value's parts."""
    roles = ["length", "text", "type"]
    if types[0] == GGUFValueType.STRING:
        return roles + ["length", "text"]
    if types[0] == GGUFValueType.ARRAY:
        roles += ["type", "count"]
        if types[-1] == GGUFValueType.STRING:
            return roles + ["length", "text"] * ((n_parts - 5) // 2)
        return roles + ["value"] * (n_parts - 5)
    return roles + ["value"]


def _slots(offset: int, parts: list[np.ndarray], roles: list[str]) -> list[Slot]:
    out, pos = [], offset
    for part, role in zip(parts, roles):
        if role == "text":
            out.append(Slot(pos, part.nbytes, "bytes", role))
        elif part.nbytes:
            width = part.dtype.itemsize
            out += [Slot(pos + i * width, width, _FORMATS[part.dtype], role) for i in range(min(part.size, 16))]
        pos += part.nbytes
    return out


def _sample(slots: list[Slot], rng: random.Random) -> list[Slot]:
    return slots if len(slots) <= MAX_SLOTS_PER_RECORD else sorted(rng.sample(slots, MAX_SLOTS_PER_RECORD),
                                                                     key=lambda s: s.pos)


def layout(path: Path) -> Layout:
    reader = GGUFReader(path)
    rng = random.Random(0)
    counts = [Slot(8, 8, "<Q", "count"), Slot(16, 8, "<Q", "count")]
    out = Layout(reader.data_offset, path.stat().st_size, counts)
    for name, fld in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        end = fld.offset + sum(p.nbytes for p in fld.parts)
        slots = _slots(fld.offset, fld.parts, _kv_roles(fld.types, len(fld.parts)))
        out.records.append(Record(fld.offset, end, _sample(slots, rng), is_tensor=False))
    for tensor in reader.tensors:
        fld = tensor.field
        end = fld.offset + sum(p.nbytes for p in fld.parts)
        roles = ["length", "text", "count", "dim", "type", "offset"]
        out.records.append(Record(fld.offset, end, _slots(fld.offset, fld.parts, roles), is_tensor=True))
    return out


def _interesting(rng: random.Random, slot: Slot, old: int | float) -> int | float:
    if slot.kind in ("<f", "<d"):
        return rng.choice(F32_EDGES + (old * 2, -old))
    bits = slot.size * 8
    edges = U64_EDGES if bits == 64 else U32_EDGES if bits == 32 else tuple(range(0, 1 << bits, max(1, (1 << bits) // 7)))
    value = rng.choice(edges + (old + 1, old - 1, old * 2, old // 2, old * 1000, rng.getrandbits(bits)))
    value %= 1 << bits
    if slot.kind in ("<b", "<h", "<i", "<q") and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _read(data: bytearray, slot: Slot) -> int | float:
    return struct.unpack_from(slot.kind, data, slot.pos)[0]


def _write(data: bytearray, slot: Slot, value: int | float) -> None:
    if slot.kind == "<?":
        value = int(value) & 1
    elif slot.kind == "<f" and abs(value) > 3.4e38:
        value = float("inf") if value > 0 else float("-inf")
    struct.pack_into(slot.kind, data, slot.pos, value)


def _set_number(rng, data, lay, notes) -> None:
    # the roles that reach the engine's checks most often are picked most often
    role = rng.choices(["value", "dim", "length", "count", "type", "offset"], [40, 20, 10, 10, 10, 10])[0]
    slots = [s for s in (lay.counts if role == "count" and rng.random() < 0.3 else lay.slots(role))
             if s.kind != "bytes" and s.pos + s.size <= len(data)]
    if not slots:
        return
    slot = rng.choice(slots)
    old = _read(data, slot)
    new = _interesting(rng, slot, old)
    _write(data, slot, new)
    notes.append(f"{role} at {slot.pos}: {old} -> {new}")


def _flip_bytes(rng, data, lay, notes) -> None:
    end = min(lay.data_offset, len(data))
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(end)
        data[pos] ^= 1 << rng.randrange(8)
    notes.append(f"bits flipped in the header (first {end} bytes)")


def _truncate(rng, data, lay, notes) -> None:
    cut = rng.choice([rng.randrange(len(data)), rng.randrange(min(lay.data_offset + 64, len(data))),
                      len(data) - rng.randint(1, 64)])
    del data[max(cut, 0):]
    notes.append(f"truncated to {len(data)} bytes")


def _splice(data: bytearray, start: int, end: int, new: bytes) -> None:
    data[start:end] = new


def _change_text(rng, data, lay, notes) -> None:
    """Rewrite a string (with its length): invalid UTF-8, empty, huge, or with NULs."""
    pairs = [(r.slots[i], r.slots[i + 1]) for r in lay.records for i in range(len(r.slots) - 1)
             if r.slots[i].role == "length" and r.slots[i + 1].role == "text"
             and r.slots[i + 1].pos + r.slots[i + 1].size <= len(data)]
    if not pairs:
        return
    length, text = rng.choice(pairs)
    old = bytes(data[text.pos:text.pos + text.size])
    kind = rng.choice(["invalid utf-8", "empty", "huge", "nul", "long"])
    new = {"invalid utf-8": old[:1] + b"\xff\xfe\xc0" + old[1:], "empty": b"", "nul": old + b"\x00x",
           "long": old * 64 + b"x" * 300, "huge": b"A" * rng.choice([1 << 16, 1 << 20, 8 << 20])}[kind]
    _splice(data, length.pos, text.pos + text.size, struct.pack("<Q", len(new)) + new)
    notes.append(f"string at {text.pos} ({old[:24]!r}): {kind}, {len(new)} bytes")


def _overlap_tensors(rng, data, lay, notes) -> None:
    offsets = [s for s in lay.slots("offset") if s.pos + 8 <= len(data)]
    if len(offsets) < 2:
        return
    a, b = rng.sample(offsets, 2)
    value = _read(data, b) + rng.choice([0, 32, 64])
    _write(data, a, value)
    notes.append(f"tensor offset at {a.pos} set to {value}, inside another tensor")


def _records(rng, data, lay, notes) -> None:
    """Delete or duplicate a metadata or tensor record (the header count follows, or not)."""
    tensor = rng.random() < 0.4
    records = [r for r in lay.records if r.is_tensor == tensor and r.end <= len(data) and r.end - r.start < 1 << 20]
    if not records:
        return
    rec = rng.choice(records)
    chunk = bytes(data[rec.start:rec.end])
    count = lay.counts[0 if tensor else 1]
    delta = 0
    if rng.random() < 0.5:
        _splice(data, rec.start, rec.end, b"")
        delta = -1
        notes.append(f"{'tensor' if tensor else 'metadata'} record at {rec.start} deleted")
    else:
        _splice(data, rec.end, rec.end, chunk)
        delta = 1
        notes.append(f"{'tensor' if tensor else 'metadata'} record at {rec.start} duplicated")
    if rng.random() < 0.8:
        _write(data, count, (_read(data, count) + delta) % (1 << 64))
    else:
        notes.append("(count left as it was)")


MUTATIONS = ((_set_number, 45), (_flip_bytes, 10), (_truncate, 8), (_change_text, 12), (_overlap_tensors, 8),
             (_records, 17))


def mutate(rng: random.Random, data: bytes, lay: Layout) -> tuple[bytes, list[str]]:
    """``data`` with one to three mutations; the notes say what was done. Mutations that
    move bytes (splices, truncations) go last, so the layout's positions stay right."""
    out = bytearray(data)
    notes: list[str] = []
    chosen = rng.choices([m for m, _ in MUTATIONS], [w for _, w in MUTATIONS], k=rng.choice([1, 1, 1, 2, 3]))
    moving = (_truncate, _change_text, _records)
    for mutation in sorted(chosen, key=lambda m: m in moving):
        mutation(rng, out, lay, notes)
        if mutation in moving:
            break  # positions after a splice are stale
    return bytes(out), notes
