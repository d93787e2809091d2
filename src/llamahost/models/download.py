"""One file of a Hub repository into a folder: streamed into a ``.part`` file kept under the
folder's ``.partial/``, resumed with a range request from where the last attempt stopped (a
dropped connection, a cancelled or interrupted pull), reported as bytes arrive, and moved into
place once whole. (huggingface_hub's own download starts over in each call, so a pull that was
cancelled would fetch everything again.)"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from ..errors import DownloadError, PullCancelledError
from .hub_errors import hub_errors

CHUNK = 1 << 20
ATTEMPTS = 5  # connections in a row that may drop before the pull gives up

Progress = Callable[[str, int, int], None]  # (url, bytes here, bytes in all)


def download(repo: str, filename: str, revision: str, size: int | None, folder: Path, ref: str, *,
             progress: Progress | None = None, cancel: threading.Event | None = None) -> Path:
    """``folder/filename``, downloaded unless a file of that ``size`` is there already. A
    progress bar shows on a terminal (as huggingface_hub's, HF_HUB_DISABLE_PROGRESS_BARS hides it)."""
    import httpx2
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, tqdm

    target = folder / filename
    if target.is_file() and (size is None or target.stat().st_size == size):
        return target
    part = folder / ".partial" / f"{filename}.{revision}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    url, headers = hf_hub_url(repo, filename, revision=revision), build_hf_headers()
    with hub_errors(ref), tqdm(total=size, initial=_size(part), unit="B", unit_scale=True, desc=filename) as bar:
        def arrived(n: int, done: int, total: int) -> None:
            bar.update(n)
            if progress is not None:
                progress(url, done, total)

        for attempt in range(ATTEMPTS):
            try:
                done = _fetch(get_session(), url, headers, part, size, ref, arrived, cancel)
                break
            except httpx2.TransportError:
                if attempt == ATTEMPTS - 1:
                    raise
        if size is not None and done != size:
            part.unlink()
            raise DownloadError(f"{ref}: {filename} came as {done} bytes where the Hub lists {size}; pull again")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return target


def _size(part: Path) -> int:
    return part.stat().st_size if part.exists() else 0


def _fetch(session, url: str, headers: dict, part: Path, size: int | None, ref: str,
           arrived: Callable[[int, int, int], None], cancel: threading.Event | None) -> int:
    """One request for what ``part`` lacks, appended to it: its size after."""
    from huggingface_hub.utils import hf_raise_for_status

    done = _size(part)
    if size is not None and done >= size:
        return done
    with session.stream("GET", url, headers=dict(headers, Range=f"bytes={done}-") if done else headers,
                        follow_redirects=True, timeout=60) as answer:
        if answer.status_code >= 400:
            answer.read()
            hf_raise_for_status(answer)
        if answer.status_code != 206:
            done = 0  # the whole file came: start over
        total = size or done + int(answer.headers.get("Content-Length") or 0)
        with open(part, "ab" if done else "wb") as f:
            for chunk in answer.iter_bytes(CHUNK):
                if cancel is not None and cancel.is_set():
                    raise PullCancelledError(f"{ref}: the pull was cancelled; nothing was added to the library "
                                             "(the part downloaded is kept: the next pull resumes it)")
                f.write(chunk)
                done += len(chunk)
                arrived(len(chunk), done, total)
    return done
