"""Gives a wheel its index's local version label: llamahost 0.1.0 built for cu128 becomes
0.1.0+cu128.

    python wheels/label.py WHEEL OUT_DIR INDEX

PyPI refuses uploads with a local label, so ``pip install "llamahost==0.1.0+cu128"
--index-url <index>/cu128/simple --extra-index-url https://pypi.org/simple`` can only install
the wheel of that index, whatever version of a package named llamahost anyone publishes on
PyPI (tests/test_wheels.py shows it with a local impostor index). Renames the wheel and its
.dist-info, sets Version in METADATA, and writes RECORD anew.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

LABEL = re.compile(r"^[a-z0-9]+(\.[a-z0-9]+)*$")


def labelled_version(version: str, label: str) -> str:
    if "+" in version or not LABEL.match(label):
        raise ValueError(f"cannot label {version!r} with {label!r}")
    return f"{version}+{label}"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def label(wheel: Path, out_dir: Path, index: str) -> Path:
    """A copy of ``wheel`` in ``out_dir``, its version labelled with ``index``."""
    project, version, rest = wheel.name.split("-", 2)
    new_version = labelled_version(version, index)
    old_info, new_info = f"{project}-{version}.dist-info/", f"{project}-{new_version}.dist-info/"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{project}-{new_version}-{rest}"
    records = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename.replace(old_info, new_info, 1)
            if name == new_info + "RECORD":
                continue
            data = src.read(item)
            if name == new_info + "METADATA":
                data = re.sub(rb"^Version: .*$", b"Version: " + new_version.encode(), data, count=1, flags=re.M)
            item.filename = name
            dst.writestr(item, data)
            records.append(_record_line(name, data))
        dst.writestr(new_info + "RECORD", "\n".join(records + [f"{new_info}RECORD,,"]) + "\n")
    return target


def main(argv: list[str]) -> int:
    print(label(Path(argv[1]), Path(argv[2]), argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
