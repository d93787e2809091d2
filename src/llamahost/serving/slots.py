"""Conversations that survive an unload: when the pool unloads a model (idle, evicted, or asked
to), each of its slots holding a prompt of MIN_TOKENS or more is saved with upstream's slot
save (``POST /slots/ID?action=save``: the tokens and their KV cache, one file a slot); when the
model loads again, the saved slots are restored (``?action=restore``) before any request, so
that a conversation's next turn reuses its cache instead of processing its prompt again.

The files live under the llamahost home, ``slots/KEY/``, KEY being the plan key of the
model's command line (engine/plans.py: the command line, the files it names with their size and
modification time, llama.cpp's build, the devices): another model, another template, other
cache types or another build never restore into the wrong context. All folders together are
kept under ``limit`` bytes, the oldest files deleted first. A file the engine refuses (damaged,
or no longer fitting) is deleted with a warning."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

from ..core.cmdline import take_option
from ..engine import plans
from ..engine.client import Client
from ..models.home import home_dir

log = logging.getLogger("llamahost.pool")

MIN_TOKENS = 128  # a shorter prompt is processed again faster than its file is written and read


class SlotFiles:
    """Saved slots of the models of one pool, within ``limit`` bytes."""

    def __init__(self, limit: int, root: Path | None = None):
        self.limit = limit
        self.root = root or home_dir() / "slots"

    def args_for(self, args: Sequence[str]) -> tuple[list[str], Path | None]:
        """The command line with its folder for saved slots (created), and that folder; the
        command line as it is, and None, where it names a folder of its own (--slot-save-path)."""
        if take_option(args, "--slot-save-path")[0] is not None or self.limit <= 0:
            return list(args), None
        folder = self.root / plans.key(args)
        folder.mkdir(parents=True, exist_ok=True)
        return [*args, "--slot-save-path", str(folder)], folder

    def save(self, server: Client, folder: Path) -> int:
        """Save the server's slots holding a prompt (in place of those saved before); how many."""
        answer = server.request("GET", "/slots")
        if answer.status != 200:  # started with --no-slots
            return 0
        folder.mkdir(parents=True, exist_ok=True)
        written = set()
        for slot in answer.json():
            if slot.get("is_processing") or slot.get("n_prompt_tokens", 0) < MIN_TOKENS:
                continue
            name = f"slot-{slot['id']}.bin"
            saved = server.request("POST", f"/slots/{slot['id']}?action=save", {"filename": name})
            if saved.status == 200:
                _checksum_file(folder / name).write_text(_sha256(folder / name))
                written.add(name)
            else:
                log.warning("could not save slot %s of %s: %s", slot["id"], folder.name, saved.body[:200])
        for old in folder.glob("slot-*.bin"):
            if old.name not in written:
                _remove(old)
        self._bound()
        return len(written)

    def restore(self, server: Client, folder: Path) -> int:
        """Restore the slots saved for this command line, one a slot; how many."""
        files = sorted(folder.glob("slot-*.bin"), key=_mtime, reverse=True)
        if not files:
            return 0
        answer = server.request("GET", "/slots")
        if answer.status != 200:
            return 0
        restored = 0
        for slot, path in zip(answer.json(), files):
            if not _intact(path):
                log.warning("a saved conversation of %s was not restored and is deleted: %s is damaged", folder.name,
                            path.name)
                _remove(path)
                continue
            result = server.request("POST", f"/slots/{slot['id']}?action=restore", {"filename": path.name})
            if result.status == 200:
                restored += 1
                continue
            log.warning("a saved conversation of %s was not restored and is deleted: %s", folder.name,
                        result.body[:200].decode(errors="replace"))
            _remove(path)
        return restored

    def _bound(self) -> None:
        files = [(_mtime(p), p) for p in self.root.glob("*/slot-*.bin")]
        total = sum(_size(p) for _, p in files)
        for _, path in sorted(files):
            if total <= self.limit:
                break
            total -= _size(path)
            _remove(path)
        for folder in self.root.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _intact(path: Path) -> bool:
    """Whether the file is as it was saved (the engine would read a damaged one as it is)."""
    try:
        return _checksum_file(path).read_text().strip() == _sha256(path)
    except OSError:
        return False


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    _checksum_file(path).unlink(missing_ok=True)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
