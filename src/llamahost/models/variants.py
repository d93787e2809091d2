"""Which GGUF files of a folder or a Hub repository make one model, in which quantizations,
and which quantization to use on this machine.

A quantization tag (``Q4_K_M``, ``IQ2_XS``, ``F16``, ``UD-Q4_K_XL``, ...) is read from the
file name, or from the folder holding the file, case-insensitively. The parts of a split
GGUF (``name-00001-of-00003.gguf``) are one model; ``mmproj*.gguf`` files are projectors,
never models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Callable, Iterable

from ..errors import AmbiguousModelError, ModelNotFoundError
from ..gguf.info import SPLIT_NAME

QUANT_TAG = re.compile(
    r"(?<![a-z0-9])((?:ud-)?(?:i?q\d+_(?:k(?:_[a-z]+)?|\d+(?:_\d+)*|[a-z]+)|tq\d_\d|b?f16|f32|mxfp4(?:_moe)?))"
    r"(?![a-z0-9])", re.IGNORECASE)
UNQUANTIZED = ("F32", "F16", "BF16")
PROJECTOR_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")
FIT_CONTEXT = 4096  # the context a model must at least serve to count as fitting
SIZE_HEADROOM = 1.2  # weights plus a fifth for the KV cache and compute buffers, when only the size is known


def quant_tag(name: str) -> str | None:
    """The quantization named in a file's path (the last one named), upper case; None if none is."""
    split = SPLIT_NAME.match(name)
    stem = split["stem"] if split else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    found = QUANT_TAG.findall(stem)
    return found[-1].upper() if found else None


def is_projector(name: str) -> bool:
    return "mmproj" in PurePath(name).name.lower()


@dataclass(frozen=True)
class Variant:
    """One model file set: its quantization tag, its files (the first part first), their total size."""

    tag: str | None
    files: tuple[str, ...]
    size: int

    def reference(self, base: str) -> str:
        """How to name this variant: ``base:TAG``, or ``base/FILE`` when it has no tag."""
        return f"{base}:{self.tag}" if self.tag else f"{base}/{self.files[0]}"


def group(files: Iterable[tuple[str, int]]) -> tuple[list[Variant], list[str]]:
    """GGUF ``(name, size)`` pairs -> the model variants (smallest first) and the projectors."""
    models: dict[str, list[tuple[str, int]]] = {}
    projectors = []
    for name, size in files:
        if not name.lower().endswith(".gguf"):
            continue
        if is_projector(name):
            projectors.append(name)
            continue
        split = SPLIT_NAME.match(name)
        models.setdefault(split["stem"] if split else name, []).append((name, size))
    variants = [Variant(quant_tag(min(parts)[0]), tuple(n for n, _ in sorted(parts)), sum(s for _, s in parts))
                for parts in models.values()]
    return sorted(variants, key=lambda v: (v.size, v.files)), sorted(projectors)


def one_model(variants: list[Variant]) -> bool:
    """Whether the variants are quantizations of one model: each has its own tag."""
    tags = [v.tag for v in variants]
    return len(variants) <= 1 or (None not in tags and len(set(tags)) == len(tags))


def by_tag(variants: list[Variant], tag: str, base: str) -> Variant:
    """The variant with this quantization tag (any case)."""
    found = [v for v in variants if v.tag and v.tag.upper() == tag.upper()]
    if len(found) == 1:
        return found[0]
    ref = f"{base}:{tag}"
    if not found:
        raise ModelNotFoundError(ref, f"no {tag.upper()} quantization", [v.reference(base) for v in variants])
    raise AmbiguousModelError(ref, "several models have this tag; name a file", [f"{base}/{v.files[0]}" for v in found])


def choose(variants: list[Variant], fits: Callable[[Variant], bool], base: str) -> Variant:
    """The best variant that fits: the largest quantized one (unquantized F16/BF16/F32 files only
    when there is nothing else). Several models, or nothing fitting, raise with the candidates."""
    if not variants:
        raise ModelNotFoundError(base, "holds no GGUF model")
    if len(variants) == 1:
        return variants[0]
    candidates = [v.reference(base) for v in variants]
    if not one_model(variants):
        raise AmbiguousModelError(base, "holds several models; name one", candidates)
    quantized = [v for v in variants if v.tag not in UNQUANTIZED] or variants
    for variant in sorted(quantized, key=lambda v: v.size, reverse=True):
        if fits(variant):
            return variant
    raise AmbiguousModelError(base, "none of its quantizations fits in this machine's free memory; name one "
                                    "with :TAG", candidates)


def pick_projector(projectors: list[str], tag: str | None) -> str | None:
    """The projector with the model's own tag, else by precision (F16 first)."""
    if not projectors:
        return None
    same = [p for p in projectors if tag and quant_tag(p) == tag]
    rank = {t: i for i, t in enumerate(PROJECTOR_PREFERENCE)}
    return (same or sorted(projectors, key=lambda p: (rank.get(quant_tag(p) or "", len(rank)), p)))[0]


def free_memory() -> int:
    """Free bytes over all devices this build found (GPUs and system memory together)."""
    from ..core.devices import devices

    return sum(d["memory_free"] for d in devices())


def fits_by_size(size: int, free: int) -> bool:
    """For files not downloaded yet, only their size is known: the weights plus SIZE_HEADROOM
    for the context must fit in the free memory of all devices together (an approximation;
    ``estimate()`` on the downloaded file answers exactly)."""
    return size * SIZE_HEADROOM <= free


def fits_by_estimate(path: str, size: int, free: int) -> bool:
    """For a local file: the engine's dry run at FIT_CONTEXT tokens (after a size check that
    spares it for files larger than all free memory)."""
    from ..planning.estimate import estimate

    return size <= free and estimate(path, n_ctx=FIT_CONTEXT).fits
