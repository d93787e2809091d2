"""Pulls from the Hugging Face Hub into the library, each on a thread of its own, reporting
their progress as events (upstream's ``download_progress``, ``download_finished``,
``download_failed``) and cancellable: what ``POST /models`` and ``DELETE /models`` of the
router do, and the dashboard's pulls."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import LlamahostError
from ..models.hub import pull
from ..models.library import LibraryModel
from .events import Events

log = logging.getLogger("llamahost")


@dataclass
class Pull:
    """One pull in progress: bytes done and expected per file (by URL), and when it started."""

    ref: str
    cancel: threading.Event = field(default_factory=threading.Event)
    files: dict[str, dict[str, int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None

    def as_dict(self) -> dict:
        done = sum(f["done"] for f in self.files.values())
        total = sum(f["total"] for f in self.files.values())
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        return {"model": self.ref, "progress": dict(self.files), "done": done, "total": total,
                "bytes_per_second": round(rate), "eta_seconds": round((total - done) / rate, 1) if rate and total else None}


class Pulls:
    """The pulls of one router: ``start(ref)``, ``cancel(ref)``; ``on_pulled(model)`` runs when one
    finishes (the router adds the model)."""

    def __init__(self, events: Events, on_pulled: Callable[[LibraryModel], None]):
        self._events = events
        self._on_pulled = on_pulled
        self._pulls: dict[str, Pull] = {}
        self._lock = threading.Lock()

    def start(self, ref: str) -> None:
        with self._lock:
            if ref in self._pulls:
                raise ValueError(f"{ref} is being pulled already")
            job = self._pulls[ref] = Pull(ref)
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"llamahost-pull-{ref}", daemon=True)
        job.thread.start()

    def cancel(self, ref: str) -> bool:
        """Stop the pull of ``ref``; False when there is none."""
        with self._lock:
            job = self._pulls.get(ref)
        if job is None:
            return False
        job.cancel.set()
        return True

    def active(self) -> list[dict]:
        with self._lock:
            return [job.as_dict() for job in self._pulls.values()]

    def close(self) -> None:
        """Cancel every pull and wait for them."""
        with self._lock:
            jobs = list(self._pulls.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join()

    def _run(self, job: Pull) -> None:
        def progress(url: str, done: int, total: int) -> None:
            job.files[url] = {"done": done, "total": total}
            self._events.publish(job.ref, "download_progress", job.as_dict())

        try:
            model = pull(job.ref, progress=progress, cancel=job.cancel)
        except (LlamahostError, OSError, ValueError) as exc:
            log.warning("pulling %s: %s", job.ref, exc)
            self._events.publish(job.ref, "download_failed", {"error": str(exc)})
        else:
            self._on_pulled(model)
            self._events.publish(job.ref, "download_finished", {"name": model.name})
        finally:
            with self._lock:
                self._pulls.pop(job.ref, None)
