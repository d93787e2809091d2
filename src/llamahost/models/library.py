"""The local library: models pulled from the Hugging Face Hub, indexed in SQLite.

Files live in ``<home>/models/<org>--<repo>/`` under their names in the repository (a
folder ``resolve()`` reads like any other). A model is recorded only once all its files
are downloaded and verified, so an interrupted pull leaves no entry; entries whose files
were deleted or changed size are dropped when the library is read.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import AmbiguousModelError, ModelNotFoundError
from .home import home_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,          -- org/repo:TAG, or org/repo/FILE for a file without a tag
    repo TEXT NOT NULL,
    tag TEXT,
    revision TEXT NOT NULL,         -- the commit the files came from
    path TEXT NOT NULL,             -- the GGUF to load (a split model's first part)
    mmproj TEXT,
    architecture TEXT NOT NULL,
    quantization TEXT NOT NULL,
    context_length INTEGER NOT NULL,
    pulled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    path TEXT NOT NULL,
    checksum TEXT NOT NULL,         -- the Hub's LFS sha256 (a git blob id for a file outside LFS)
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,      -- with size: the file is the one that was verified
    PRIMARY KEY (model, path)
);
"""


@dataclass(frozen=True)
class LibraryModel:
    name: str
    repo: str
    tag: str | None
    revision: str
    path: Path
    mmproj: Path | None
    files: tuple[Path, ...]  # the model's parts and its projector
    size: int
    architecture: str
    quantization: str
    context_length: int
    pulled_at: float

    def as_dict(self) -> dict:
        return dict(vars(self), path=str(self.path), mmproj=self.mmproj and str(self.mmproj),
                    files=[str(f) for f in self.files])


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Library:
    def __init__(self, home: Path | None = None):
        self.home = home or home_dir()
        self.db_path = self.home / "library.sqlite"

    def folder(self, repo: str) -> Path:
        """Where a repository's files are downloaded to (``org--repo``, as exo names its folders);
        resolved, as huggingface_hub resolves the paths it returns."""
        return (self.home / "models" / repo.replace("/", "--")).resolve()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection whose statements commit together, or not at all."""
        self.home.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            db.executescript(SCHEMA)
            with db:
                yield db
        finally:
            db.close()

    def record(self, model: LibraryModel, checksums: dict[Path, str]) -> None:
        """Add (or replace) a model whose files are all downloaded and match ``checksums``."""
        stamps = {p: _stamp(p) for p in model.files}
        missing = [str(p) for p, stamp in stamps.items() if stamp is None]
        if missing:
            raise FileNotFoundError(f"cannot record {model.name}: missing {', '.join(missing)}")
        with self._db() as db:
            db.execute("DELETE FROM models WHERE name = ?", (model.name,))
            db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                model.name, model.repo, model.tag, model.revision, str(model.path),
                model.mmproj and str(model.mmproj), model.architecture, model.quantization,
                model.context_length, model.pulled_at))
            db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                           [(model.name, str(p), checksums[p], *stamps[p]) for p in model.files])

    def is_verified(self, path: Path, checksum: str) -> bool:
        """Whether this very file (same size and modification time) was verified against ``checksum``."""
        stamp = _stamp(path)
        if stamp is None:
            return False
        with self._db() as db:
            row = db.execute("SELECT 1 FROM files WHERE path = ? AND checksum = ? AND size = ? AND mtime_ns = ?",
                             (str(path), checksum, *stamp)).fetchone()
        return row is not None

    def prune(self) -> list[str]:
        """Drop the entries whose files are gone or changed size; their names."""
        with self._db() as db:
            broken = sorted({row["model"] for row in db.execute("SELECT model, path, size FROM files")
                             if (_stamp(Path(row["path"])) or (None,))[0] != row["size"]})
            db.executemany("DELETE FROM models WHERE name = ?", [(name,) for name in broken])
        return broken

    def models(self) -> list[LibraryModel]:
        """Every model whose files are all in place, by name."""
        self.prune()
        with self._db() as db:
            files: dict[str, list[sqlite3.Row]] = {}
            for row in db.execute("SELECT model, path, size FROM files ORDER BY path"):
                files.setdefault(row["model"], []).append(row)
            return [LibraryModel(
                name=row["name"], repo=row["repo"], tag=row["tag"], revision=row["revision"], path=Path(row["path"]),
                mmproj=Path(row["mmproj"]) if row["mmproj"] else None,
                files=tuple(Path(f["path"]) for f in files[row["name"]]),
                size=sum(f["size"] for f in files[row["name"]]), architecture=row["architecture"],
                quantization=row["quantization"], context_length=row["context_length"], pulled_at=row["pulled_at"],
            ) for row in db.execute("SELECT * FROM models ORDER BY name")]

    def find(self, ref: str) -> list[LibraryModel]:
        """The models a reference names: a full name (``org/repo:TAG``), a repository (all
        of its quantizations pulled), ``org/repo/FILE``, or either without the ``org/``."""
        key = ref.lower()
        models = self.models()

        def repo_file(m: LibraryModel) -> str:
            return f"{m.repo}/{m.path.relative_to(self.folder(m.repo)).as_posix()}"

        for spelling in (lambda m: m.name, lambda m: m.repo, repo_file):
            for strip_org in (False, True):
                found = [m for m in models
                         if (spelling(m).split("/", 1)[1] if strip_org else spelling(m)).lower() == key]
                if found:
                    return found
        return []

    def one(self, ref: str) -> LibraryModel:
        """The one model ``ref`` names (see find), or ModelNotFoundError / AmbiguousModelError."""
        found = self.find(ref)
        if not found:
            raise ModelNotFoundError(ref, "no such model in the library", [m.name for m in self.models()])
        if len(found) > 1:
            raise AmbiguousModelError(ref, "names several models in the library; name one", [m.name for m in found])
        return found[0]

    def remove(self, model: LibraryModel) -> list[Path]:
        """Delete a model's files (those no other entry uses) and its entry; the files deleted."""
        with self._db() as db:
            shared = {row["path"] for row in db.execute("SELECT path FROM files WHERE model != ?", (model.name,))}
        deleted = [p for p in model.files if str(p) not in shared]
        for path in deleted:  # files first: an interruption leaves an entry that prune() drops
            path.unlink(missing_ok=True)
        with self._db() as db:
            db.execute("DELETE FROM models WHERE name = ?", (model.name,))
            left = db.execute("SELECT 1 FROM models WHERE repo = ?", (model.repo,)).fetchone()
        if left is None:  # the repository's folder holds only what pulls put there
            shutil.rmtree(self.folder(model.repo), ignore_errors=True)
        return deleted


def list_models() -> list[LibraryModel]:
    """The models pulled into the library (``llamahost list``)."""
    return Library().models()


def remove_model(ref: str) -> list[Path]:
    """Delete a pulled model (``llamahost rm``); the files deleted."""
    library = Library()
    return library.remove(library.one(ref))
