"""Where llamahost keeps its files: ``LLAMAHOST_HOME``, else the user cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    explicit = os.environ.get("LLAMAHOST_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif os.uname().sysname == "Darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llamahost"
