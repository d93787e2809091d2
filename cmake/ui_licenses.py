"""The licences of the npm packages a web UI build used, into one text file that ships with it.

    python cmake/ui_licenses.py <ui src folder with node_modules> <out file>

Every package under node_modules (a superset of what the bundle holds: the build's tools too),
with its name, version and licence, grouped under each distinct licence text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LICENSE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "LICENCE.md", "license", "license.md", "COPYING")


def packages(node_modules: Path):
    """(name@version, licence, licence text) of every package in node_modules, nested ones too."""
    for manifest in sorted(node_modules.rglob("package.json")):
        folder = manifest.parent
        if folder.parent.name != "node_modules" and folder.parent.parent.name != "node_modules":
            continue  # a package.json inside a package's own folders, not a package
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(meta, dict) or "name" not in meta or "version" not in meta:
            continue
        text = next((f.read_text(encoding="utf-8", errors="replace").strip() for name in LICENSE_FILES
                     if (f := folder / name).is_file()), "")
        licence = meta.get("license") or (meta.get("licenses") or [{}])[0].get("type", "unknown")
        yield f"{meta['name']}@{meta['version']}", str(licence), text


def main(argv: list[str]) -> int:
    by_text: dict[tuple[str, str], list[str]] = {}
    for name, licence, text in packages(Path(argv[1]) / "node_modules"):
        by_text.setdefault((licence, text), []).append(name)
    out = ["Third-party software in llama.cpp's web UI as llamahost builds it (the npm packages of its build).", ""]
    for (licence, text), names in sorted(by_text.items(), key=lambda item: (item[0][0], item[1][0])):
        out += ["=" * 78, f"{licence}: " + ", ".join(sorted(set(names))), "", text or "(no licence file in the package)", ""]
    Path(argv[2]).write_text("\n".join(out) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
