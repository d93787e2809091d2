"""Will a model on the Hub fit here, before it is downloaded: each file's GGUF header fetched
with HTTP range requests (a few MB, never the whole file) and kept as a sparse local copy of
the file (the header's bytes, then a hole the size of the rest). The engine's dry run reads
only headers and tensor tables, so ``estimate()`` on that copy answers exactly as it would on
the downloaded file. Copies are cached per repository revision, under the llamahost home."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.devices import devices
from ..errors import DownloadError, LlamahostError
from ..gguf.reader import HeaderIncomplete, read_header_prefix
from ..planning.estimate import Estimate, estimate
from .home import home_dir
from .hub import library_name, repo_info, variants_of
from .hub_errors import hub_errors

FIRST_FETCH = 256 << 10  # then twice as much each time: a 150k-token vocabulary makes a header of about 4 MB
LARGEST_HEADER = 256 << 20


def header_copy(repo: str, filename: str, revision: str, size: int) -> tuple[Path, int]:
    """The sparse copy of a Hub file (fetched once per revision), and the bytes this call fetched."""
    target = home_dir() / "headers" / repo.replace("/", "--") / revision / filename
    if target.is_file() and target.stat().st_size == size:
        return target, 0
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    url, headers = hf_hub_url(repo, filename, revision=revision), build_hf_headers()
    data, want = b"", FIRST_FETCH
    with hub_errors(f"{repo}/{filename}"):
        while True:
            answer = get_session().get(url, headers=dict(headers, Range=f"bytes={len(data)}-{min(want, size) - 1}"),
                                       follow_redirects=True, timeout=60)
            hf_raise_for_status(answer)
            if answer.status_code != 206:
                raise DownloadError(f"{repo}/{filename}: the Hub answered a range request with {answer.status_code}")
            data += answer.content
            try:
                read_header_prefix(data, size, target)  # InvalidModelError for a damaged header, as a local file's
                break
            except HeaderIncomplete as exc:
                want = max(exc.needed + FIRST_FETCH, 2 * len(data))
                if want > LARGEST_HEADER:
                    raise DownloadError(f"{repo}/{filename}: a header over {LARGEST_HEADER >> 20} MiB") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with open(part, "wb") as f:
        f.write(data)
        f.truncate(size)  # a hole: no disk for the weights
    os.replace(part, target)
    return target, len(data)


@dataclass(frozen=True)
class Verdict:
    """Whether one quantization of a repository fits this machine's devices, and how."""

    name: str  # the reference that pulls it
    tag: str | None
    files: tuple[str, ...]
    size: int
    fits: bool
    where: str  # "gpu", "split" (some layers on the CPU), "cpu" (no GPU here), "none", or "unknown" (error)
    layers_offloaded: int
    estimate: Estimate | None
    fetched: int  # header bytes this call fetched (0: cached)
    error: str | None = None  # why there is no estimate (a header the Hub would not serve, a damaged one)

    def as_dict(self) -> dict:
        return {"name": self.name, "tag": self.tag, "files": list(self.files), "size": self.size, "fits": self.fits,
                "where": self.where, "layers_offloaded": self.layers_offloaded, "fetched": self.fetched,
                "estimate": self.estimate.as_dict() if self.estimate else None, "error": self.error}


def verdicts(repo: str, **params) -> list[Verdict]:
    """Each GGUF quantization of a Hub repository, smallest first, with llamahost's estimate of
    it on this machine's devices with these Server parameters (``n_ctx``, ``parallel``, ...)."""
    info = repo_info(repo, repo)
    variants, _ = variants_of(info)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    memory = sum(device["memory_total"] for device in devices())
    out = []
    for variant in variants:
        name, fetched, first = library_name(repo, variant, variants), 0, None
        if variant.size > memory:  # its weights alone outgrow every device together: no header needed
            out.append(Verdict(name, variant.tag, variant.files, variant.size, False, "none", 0, None, 0,
                               "larger than the memory of all this machine's devices together"))
            continue
        try:
            for filename in variant.files:
                path, n = header_copy(repo, filename, info.sha, sizes[filename])
                fetched += n
                first = first or path
            est = estimate(first, **params)
        except (LlamahostError, OSError) as exc:  # this file only: the others still get their verdicts
            out.append(Verdict(name, variant.tag, variant.files, variant.size, False, "unknown", 0, None, fetched,
                               str(exc)))
            continue
        gpus = est.devices[:-1]
        if not est.fits:
            where = "none"
        elif not gpus:
            where = "cpu"
        else:
            where = "gpu" if est.n_gpu_layers >= est.n_layers + 1 else "split"
        out.append(Verdict(name, variant.tag, variant.files, variant.size, est.fits, where, est.n_gpu_layers, est,
                           fetched))
    return out
