"""A PEP 503 "simple" index as static pages, for ``pip install llamahost --index-url <root>/simple``.

``python wheels/index.py WHEEL_DIR ROOT`` copies the wheels of WHEEL_DIR into
ROOT/simple/llamahost/ and writes ROOT/simple/index.html and ROOT/simple/llamahost/index.html,
each link carrying the file's sha256. Files already in the index stay, so wheels built on several
machines (one per OS in the workflow) end up in one index.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import shutil
import sys
from pathlib import Path

PROJECT = "llamahost"
REQUIRES_PYTHON = ">=3.10"


def page(title: str, links: list[str]) -> str:
    body = "\n".join(links)
    return (f"<!DOCTYPE html>\n<html>\n<head><meta name=\"pypi:repository-version\" content=\"1.0\">"
            f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body>\n</html>\n")


def write_index(wheel_dir: Path, root: Path) -> list[Path]:
    """The index's wheels after adding those of ``wheel_dir``."""
    project_dir = root / "simple" / PROJECT
    project_dir.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheel_dir.glob("*.whl")):
        shutil.copy2(wheel, project_dir / wheel.name)
    wheels = sorted(project_dir.glob("*.whl"))
    requires = html.escape(REQUIRES_PYTHON)
    links = []
    for wheel in wheels:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        name = html.escape(wheel.name)
        links.append(f'<a href="{name}#sha256={digest}" data-requires-python="{requires}">{name}</a><br>')
    (project_dir / "index.html").write_text(page(f"Links for {PROJECT}", links))
    (root / "simple" / "index.html").write_text(page("Simple index", [f'<a href="{PROJECT}/">{PROJECT}</a><br>']))
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel_dir", type=Path)
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    for wheel in write_index(args.wheel_dir, args.root):
        print(f"{args.root / 'simple' / PROJECT / wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
