"""The documented install command of a backend's wheels (README) against an impostor: a second
index, standing for PyPI, that offers a higher-versioned llamahost and one of the same version
without a label. Real pip, real PEP 503 indexes written by wheels/index.py; stub wheels."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "wheels"))

from index import write_index  # noqa: E402
from label import label  # noqa: E402


def stub_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel named llamahost at ``version`` (what an impostor could publish)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"llamahost-{version}-py3-none-any.whl"
    info = f"llamahost-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: llamahost\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             "llamahost_stub.py": f"VERSION = {version!r}\n"}
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n")
    return path


def chosen(tmp_path: Path, requirement: str, index: Path, extra: Path) -> str:
    """The version of llamahost pip would install for ``requirement`` from these two indexes."""
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-cache-dir",
                    "--ignore-installed", "--quiet", "--report", str(report), requirement,
                    "--index-url", (index / "simple").as_uri(), "--extra-index-url", (extra / "simple").as_uri()],
                   check=True, timeout=120)
    return json.loads(report.read_text())["install"][0]["metadata"]["version"]


def test_the_documented_command_installs_the_index_wheel_not_an_impostor(tmp_path):
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    command = re.search(r'pip install "(llamahost==[^"]+)" --index-url <index>/(\w+)/simple', (ROOT / "README.md").read_text())
    assert command is not None and command[1] == f"llamahost=={version}+{command[2]}", "README's install command"

    ours = label(stub_wheel(tmp_path / "built", version), tmp_path / "labelled", "cpu")
    assert ours.name == f"llamahost-{version}+cpu-py3-none-any.whl"
    write_index(ours.parent, tmp_path / "cpu-index")
    impostors = tmp_path / "impostors"
    stub_wheel(impostors, "99.0.0")
    stub_wheel(impostors, version)
    write_index(impostors, tmp_path / "pypi")

    documented = command[1].replace(f"+{command[2]}", "+cpu")
    assert chosen(tmp_path, documented, tmp_path / "cpu-index", tmp_path / "pypi") == f"{version}+cpu"
    # what the pin prevents: unpinned, or pinned without the label, pip takes the impostor
    assert chosen(tmp_path, "llamahost", tmp_path / "cpu-index", tmp_path / "pypi") == "99.0.0"
    assert chosen(tmp_path, f"llamahost=={version}", tmp_path / "cpu-index", tmp_path / "pypi") in (version, f"{version}+cpu")


def test_a_labelled_wheel_is_whole(tmp_path):
    ours = label(stub_wheel(tmp_path / "built", "1.2.3"), tmp_path / "labelled", "cu128")
    with zipfile.ZipFile(ours) as z:
        names = z.namelist()
        assert "llamahost-1.2.3+cu128.dist-info/RECORD" in names and not any("1.2.3.dist-info" in n for n in names)
        assert "Version: 1.2.3+cu128" in z.read("llamahost-1.2.3+cu128.dist-info/METADATA").decode()
        record = z.read("llamahost-1.2.3+cu128.dist-info/RECORD").decode().splitlines()
        assert all(line.startswith(name) for name, line in zip(sorted(n for n in names if not n.endswith("RECORD")),
                                                               sorted(r for r in record if "RECORD" not in r)))
