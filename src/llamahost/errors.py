"""The exceptions llamahost raises."""

from __future__ import annotations

import os


class LlamahostError(Exception):
    """Base of llamahost's own errors."""


class ModelLoadError(LlamahostError):
    """The engine could not load a model."""

    def __init__(self, path: str | os.PathLike, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class InvalidModelError(ModelLoadError, ValueError):
    """The file is not a usable GGUF: not one at all, truncated, or corrupt."""


class RPCWorkerError(LlamahostError, ConnectionError):
    """An RPC worker that cannot be used: not reachable, not answering, or of another protocol
    version (the message names both)."""


class ServerClosedError(LlamahostError):
    """The server was closed (or never started) while it was being used."""


class APIError(LlamahostError):
    """A route answered with an error status; ``status`` and the server's ``error`` body."""

    def __init__(self, status: int, error: dict | str):
        self.status = status
        self.error = error
        message = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"HTTP {status}: {message}")


class ModelReferenceError(LlamahostError, LookupError):
    """A model reference that names no model, or more than one: the ``ref`` and the ``candidates`` seen."""

    def __init__(self, ref: str | os.PathLike, problem: str, candidates: "list[str] | tuple[str, ...]" = ()):
        self.ref = os.fspath(ref)
        self.problem = problem
        self.candidates = list(candidates)
        listing = "; candidates: " + ", ".join(self.candidates) if self.candidates else ""
        super().__init__(f"{self.ref}: {problem}{listing}")

    def __reduce__(self):  # pickled (to another process) by its own arguments, not the message alone
        return type(self), (self.ref, self.problem, self.candidates)


class ModelNotFoundError(ModelReferenceError, FileNotFoundError):
    """No file, folder, library entry or Hugging Face repository matches the reference."""


class AmbiguousModelError(ModelReferenceError, ValueError):
    """The reference matches several models (or quantizations, none of which fits): name one."""


class DownloadError(LlamahostError, OSError):
    """A download from the Hugging Face Hub failed or gave the wrong bytes."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 differs from the one the Hub lists; the file was deleted."""


class GatedModelError(DownloadError, PermissionError):
    """The repository is gated or private: it needs a token (``HF_TOKEN``) with access."""


class PullCancelledError(DownloadError):
    """A pull was cancelled: nothing was added to the library (the next pull resumes the file)."""
