"""The Hugging Face Hub, through ``huggingface_hub``: search GGUF repositories, list a
repository's quantizations, pull one into the local library.

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` work as for any Hub client. A download
shows a progress bar, resumes with a range request when the connection drops or a pull was
cancelled (models/download.py), and is checked against the sha256 the Hub lists before the library records it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ChecksumError, ModelNotFoundError
from ..gguf.info import inspect
from .download import download
from .hub_errors import hub_errors
from .library import Library, LibraryModel
from .variants import Variant, by_tag, choose, fits_by_size, free_memory, group, one_model, pick_projector

if TYPE_CHECKING:
    from huggingface_hub.hf_api import ModelInfo as HubModelInfo

HUB_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<tag>[\w.-]+)|/(?P<file>.+\.gguf))?$", re.IGNORECASE)
SEARCH_FIELDS = ["downloads", "likes", "lastModified", "gated"]


@dataclass(frozen=True)
class HubRef:
    repo: str
    tag: str | None = None
    file: str | None = None


HUB_PREFIX = "hf://"  # names the Hub explicitly, whatever exists locally


def parse_ref(text: str) -> HubRef | None:
    """``org/repo``, ``org/repo:TAG`` or ``org/repo/FILE.gguf``, with or without ``hf://``; None
    for anything else (a two-part name ending in .gguf is a path, not a repository)."""
    explicit = text.startswith(HUB_PREFIX)
    text = text.removeprefix(HUB_PREFIX)
    match = HUB_REF.match(text)
    if match is not None and explicit:
        return HubRef(match["repo"], match["tag"], match["file"])
    if match is None or (match["file"] is None and match["tag"] is None and text.lower().endswith(".gguf")):
        return None
    return HubRef(match["repo"], match["tag"], match["file"])


def offline() -> bool:
    """Whether HF_HUB_OFFLINE keeps the Hub out of reach."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


@dataclass(frozen=True)
class HubModel:
    """A search result: a repository holding GGUF files."""

    repo: str
    downloads: int | None
    likes: int | None
    last_modified: datetime | None
    gated: bool | str | None  # False, or how access is granted ("auto", "manual")

    def as_dict(self) -> dict:
        return dict(vars(self), last_modified=self.last_modified and self.last_modified.isoformat())


def search_models(query: str, *, limit: int = 20) -> list[HubModel]:
    """GGUF repositories on the Hub matching ``query``, most downloaded first."""
    from huggingface_hub import HfApi

    with hub_errors(query):
        return [HubModel(m.id, m.downloads, m.likes, m.last_modified, m.gated)
                for m in HfApi().list_models(search=query, filter="gguf", sort="downloads", limit=limit,
                                             expand=SEARCH_FIELDS)]


@dataclass(frozen=True)
class Quantization:
    """One quantization of a Hub repository, not downloaded."""

    name: str  # the reference that pulls it, ``org/repo:TAG``
    tag: str | None
    files: tuple[str, ...]
    size: int
    fits: bool  # by size alone (see variants.fits_by_size)

    def as_dict(self) -> dict:
        return dict(vars(self), files=list(self.files))


def repo_info(repo: str, ref: str) -> "HubModelInfo":
    from huggingface_hub import HfApi

    with hub_errors(ref):
        return HfApi().model_info(repo, files_metadata=True)


def variants_of(info: "HubModelInfo") -> tuple[list[Variant], list[str]]:
    return group((s.rfilename, s.size or 0) for s in info.siblings or ())


def library_name(repo: str, variant: Variant, variants: list[Variant]) -> str:
    return variant.reference(repo) if one_model(variants) else f"{repo}/{variant.files[0]}"


def list_quantizations(repo: str) -> list[Quantization]:
    """A repository's GGUF models with their sizes and whether each fits this machine, smallest first."""
    variants, _ = variants_of(repo_info(repo, repo))
    free = free_memory()
    return [Quantization(library_name(repo, v, variants), v.tag, v.files, v.size, fits_by_size(v.size, free))
            for v in variants]


def _pick(ref: HubRef, text: str, variants: list[Variant]) -> Variant:
    if ref.file:
        found = [v for v in variants if ref.file in v.files]
        if not found:
            raise ModelNotFoundError(text, "no such GGUF model in the repository",
                                     [f"{ref.repo}/{v.files[0]}" for v in variants])
        return found[0]
    if ref.tag:
        return by_tag(variants, ref.tag, ref.repo)
    free = free_memory()
    return choose(variants, lambda v: fits_by_size(v.size, free), ref.repo)


def pull(ref: str, library: Library | None = None, *, progress: Callable[[str, int, int], None] | None = None,
         cancel: threading.Event | None = None) -> LibraryModel:
    """Download a model (and the projector beside it) into the library, verified; an
    up-to-date copy is not downloaded again. ``ref``: ``org/repo`` (the best quantization
    that fits), ``org/repo:TAG``, ``org/repo/FILE.gguf``, or the name of a pulled model.
    ``progress(url, done, total)`` is called as bytes arrive; setting ``cancel`` stops the pull
    (PullCancelledError; the part downloaded is kept, and the next pull of the file resumes it:
    models/download.py)."""
    library = library or Library()
    hub_ref = parse_ref(ref)
    if hub_ref is None:  # the name of a pulled model: pull it again (an update, if the repository changed)
        ref = library.one(ref).name
        hub_ref = parse_ref(ref)
    info = repo_info(hub_ref.repo, ref)
    variants, projectors = variants_of(info)
    variant = _pick(hub_ref, ref, variants)
    projector = pick_projector(projectors, variant.tag)
    siblings = {s.rfilename: s for s in info.siblings}
    checksums = {}
    for filename in variant.files + ((projector,) if projector else ()):
        sibling = siblings[filename]
        checksum = sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
        path = download(hub_ref.repo, filename, info.sha, sibling.size, library.folder(hub_ref.repo), ref,
                        progress=progress, cancel=cancel)
        if not library.is_verified(path, checksum):
            _verify(path, checksum)
        checksums[path] = checksum
    paths = list(checksums)
    about = inspect(paths[0])
    model = LibraryModel(
        name=library_name(hub_ref.repo, variant, variants), repo=hub_ref.repo, tag=variant.tag, revision=info.sha,
        path=paths[0], mmproj=paths[-1] if projector else None, files=tuple(paths), size=sum(p.stat().st_size for p in paths),
        architecture=about.architecture, quantization=about.file_type, context_length=about.n_ctx_train,
        pulled_at=time.time())
    library.record(model, checksums)
    return model


def _verify(path: Path, checksum: str) -> None:
    """Check a download against the Hub's checksum (an LFS sha256, or the git blob id of a
    file kept outside LFS); a mismatch deletes the file, so the next pull downloads it again."""
    from huggingface_hub.utils import tqdm
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    if len(checksum) == 64:
        with open(path, "rb") as raw, tqdm.wrapattr(raw, "read", total=path.stat().st_size, desc=f"verifying {path.name}",
                                                    unit="B", unit_scale=True, unit_divisor=1024,
                                                    disable=None) as reader:  # on a terminal, as download bars
            actual = sha_fileobj(reader).hex()
    else:
        actual = git_hash(path.read_bytes())
    if actual != checksum:
        path.unlink()
        raise ChecksumError(f"{path.name}: the downloaded bytes hash to {actual}, the Hub lists {checksum}; "
                            "the file was deleted (pull again)")
