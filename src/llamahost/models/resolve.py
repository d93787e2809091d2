"""One model reference everywhere: ``resolve(ref)`` turns a GGUF path, a model folder, a
library name or a Hugging Face reference into the GGUF to load, with the projector beside it.

Tried in this order: an existing file; an existing folder (``FOLDER:TAG`` names one of its
quantizations); a model in the local library; the Hugging Face Hub (``org/repo``,
``org/repo:TAG``, ``org/repo/FILE.gguf``), pulled into the library unless HF_HUB_OFFLINE is set.
A reference shaped like a path (``./x``, ``/x``, ``~/x``, ``models/x`` beside a ``models`` folder)
never reaches the Hub; ``hf://org/repo`` always does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import ENV_PREFIX
from ..errors import ModelNotFoundError
from ..gguf.info import SPLIT_NAME
from .hub import HUB_PREFIX, offline, parse_ref, pull
from .library import Library, LibraryModel
from .variants import (
    Variant,
    by_tag,
    choose,
    fits_by_estimate,
    free_memory,
    group,
    one_model,
    pick_projector,
    quant_tag,
)

MAX_CANDIDATES = 20
PROJECTOR_FLAGS = ("-mm", "--mmproj", "-mmu", "--mmproj-url", "--no-mmproj", "--no-mmproj-auto")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # the GGUF to load; for a split GGUF its first part
    mmproj: Path | None  # the projector found beside it
    source: str  # "file", "folder", "library", or "hub" (downloaded by this call)
    name: str

    def server_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` plus the projector, unless one is given (``mmproj``, LLAMAHOST_MMPROJ)
        or refused (``mmproj_auto=False``, upstream's ``--no-mmproj-auto``)."""
        if (self.mmproj is None or "mmproj" in params or params.get("mmproj_auto") is False
                or os.environ.get(ENV_PREFIX + "MMPROJ")):
            return params
        return dict(params, mmproj=str(self.mmproj))

    def server_flags(self, flags: list[str]) -> list[str]:
        """llama-server's command line: ``--model``, the projector unless ``flags`` (or
        LLAMA_ARG_MMPROJ) give or refuse one, then ``flags``."""
        named = {f.split("=", 1)[0] for f in flags}
        model = ["--model", str(self.path)]
        if self.mmproj is None or named & set(PROJECTOR_FLAGS) or os.environ.get("LLAMA_ARG_MMPROJ"):
            return model + flags
        return model + ["--mmproj", str(self.mmproj)] + flags


def names_a_path(text: str) -> bool:
    """Whether a reference can only be a local path, never a Hub repository: it starts with
    ``./``, ``../``, ``/`` or ``~``, holds a separator other than one ``/`` between org and
    repo (``\\``), or its first component exists here (``models/qwen`` beside a ``models`` folder)."""
    if text.startswith(("./", "../", "/", "~")) or "\\" in text:
        return True
    return "/" in text and os.path.lexists(text.split("/", 1)[0])


def names_the_hub(text: str) -> bool:
    """Whether a reference may be looked up on the Hugging Face Hub: ``org/repo[:TAG|/FILE.gguf]``
    that is no local path, or anything of that shape after ``hf://``."""
    return parse_ref(text) is not None and (text.startswith(HUB_PREFIX) or not names_a_path(text))


def resolve(ref: str | os.PathLike, *, library: Library | None = None, download: bool = True) -> ResolvedModel:
    """The model a reference names (see the module doc). A reference that names nothing, or
    several models, raises ModelNotFoundError or AmbiguousModelError listing the candidates.
    A path that does not exist is never looked up on the Hub (``names_a_path``); ``hf://`` names
    the Hub whatever exists here. ``download=False``: a Hub reference not pulled yet raises
    ModelNotFoundError instead."""
    text = os.fspath(ref)
    path = Path(text).expanduser()
    hub_only = text.startswith(HUB_PREFIX)
    if not hub_only:
        if path.is_file():
            return _from_file(path)
        if path.is_dir():
            return _from_folder(path, text, None)
        folder, _, tag = text.rpartition(":")
        if folder and tag and not set("/\\") & set(tag) and Path(folder).expanduser().is_dir():
            return _from_folder(Path(folder).expanduser(), folder, tag)
    library = library or Library()
    pulled = library.find(text.removeprefix(HUB_PREFIX))
    if pulled:
        return _from_library(pulled, text)
    if not names_the_hub(text):
        raise ModelNotFoundError(text, "no such file or folder, and no model of that name in the library",
                                 _ggufs_near(path) or [m.name for m in library.models()][:MAX_CANDIDATES])
    if not download or offline():
        reason = "download=False" if not download else "HF_HUB_OFFLINE keeps the Hub out of reach"
        raise ModelNotFoundError(text, f"not in the library, and {reason}",
                                 [m.name for m in library.models()][:MAX_CANDIDATES])
    model = pull(text, library)
    return ResolvedModel(model.path, model.mmproj, "hub", model.name)


def _gguf_files(folder: Path, recursive: bool) -> list[tuple[str, int]]:
    """``(name relative to folder, size)`` of the GGUFs in it, leaving out hidden folders."""
    found = []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        relative = path.relative_to(folder)
        if path.suffix.lower() == ".gguf" and path.is_file() and not any(p.startswith(".") for p in relative.parts[:-1]):
            found.append((relative.as_posix(), path.stat().st_size))
    return found


def _ggufs_near(path: Path) -> list[str]:
    """For a path that does not exist: the GGUFs in its folder, if that exists."""
    if not path.parent.is_dir():
        return []
    return [str(path.parent / name) for name, _ in _gguf_files(path.parent, recursive=False)][:MAX_CANDIDATES]


def _projector(folder: Path, variants: list[Variant], projectors: list[str], tag: str | None) -> Path | None:
    """A projector belongs to the model only when the folder holds that one model."""
    chosen = pick_projector(projectors, tag) if one_model(variants) else None
    return folder / chosen if chosen else None


def _from_file(path: Path) -> ResolvedModel:
    split = SPLIT_NAME.match(path.name)
    first = path.with_name(f"{split['stem']}-00001-of-{split['count']}.gguf") if split else path
    variants, projectors = group(_gguf_files(path.parent, recursive=False))
    mmproj = _projector(path.parent, variants, projectors, quant_tag(path.name))
    return ResolvedModel(first, mmproj, "file", split["stem"] if split else path.stem)


def _from_folder(folder: Path, ref: str, tag: str | None) -> ResolvedModel:
    variants, projectors = group(_gguf_files(folder, recursive=True))
    if tag:
        variant = by_tag(variants, tag, ref)
    else:
        free = free_memory()
        variant = choose(variants, lambda v: fits_by_estimate(str(folder / v.files[0]), v.size, free), ref)
    name = folder.resolve().name.replace("--", "/", 1)  # exo names a folder org--repo
    if len(variants) > 1 and variant.tag:
        name += f":{variant.tag}"
    return ResolvedModel(folder / variant.files[0], _projector(folder, variants, projectors, variant.tag), "folder", name)


def _from_library(pulled: list[LibraryModel], ref: str) -> ResolvedModel:
    """One pulled model, or the best that fits of a repository's pulled quantizations."""
    model = pulled[0]
    if len(pulled) > 1:
        by_path = {str(m.path): m for m in pulled}
        free = free_memory()
        chosen = choose([Variant(m.tag, (str(m.path),), m.size) for m in pulled],
                        lambda v: fits_by_estimate(v.files[0], v.size, free), ref)
        model = by_path[chosen.files[0]]
    return ResolvedModel(model.path, model.mmproj, "library", model.name)
