"""Missing, foreign, truncated and corrupt model files: a clear exception, never a crash.

Each case runs in a fresh interpreter, which must survive and print what it caught.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import synthetic

PROBE = textwrap.dedent("""
    import json, sys, llamahost
    try:
        llamahost.Server(sys.argv[1], n_ctx=256)
    except Exception as exc:
        print(json.dumps({"type": type(exc).__name__, "bases": [c.__name__ for c in type(exc).__mro__],
                          "message": str(exc)}))
    else:
        print(json.dumps({"type": None}))
""")


def load_in_subprocess(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"interpreter died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_missing_file(tmp_path):
    got = load_in_subprocess(tmp_path / "nope.gguf")
    assert got["type"] == "ModelNotFoundError" and "FileNotFoundError" in got["bases"]
    assert "nope.gguf" in got["message"]


def test_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("these are not weights\n" * 10)
    got = load_in_subprocess(path)
    assert got["type"] == "InvalidModelError" and "ValueError" in got["bases"]
    assert str(path) in got["message"] and "not a GGUF" in got["message"]


def test_directory_without_a_model(tmp_path):
    got = load_in_subprocess(tmp_path)  # a folder is a model reference: this one holds no model
    assert got["type"] == "ModelNotFoundError" and "holds no GGUF model" in got["message"]


@pytest.mark.parametrize("keep", [10, 100, 4096, 0.5])
def test_truncated(tmp_path, tiny_model, keep):
    data = tiny_model.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[:cut])
    got = load_in_subprocess(path)
    assert got["type"] == "InvalidModelError", got
    assert str(path) in got["message"] and "truncated" in got["message"]


def test_truncated_demo_model(tmp_path, demo_model):
    path = tmp_path / "demo-truncated.gguf"
    with open(demo_model, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(demo_model.stat().st_size // 2))
    got = load_in_subprocess(path)
    assert got["type"] == "InvalidModelError"
    assert "runs past the end" in got["message"]


def corrupt(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


@pytest.mark.parametrize("case, offset, new, expect", [
    ("bad version", 4, (99).to_bytes(4, "little"), "version 99"),
    ("absurd tensor count", 8, (1 << 60).to_bytes(8, "little"), "tensor count"),
    ("absurd metadata count", 16, (1 << 60).to_bytes(8, "little"), "metadata count"),
    ("huge key length", 24, (1 << 62).to_bytes(8, "little"), "metadata key #0"),
])
def test_corrupt_header(tmp_path, tiny_model, case, offset, new, expect):
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(corrupt(tiny_model.read_bytes(), offset, new))
    got = load_in_subprocess(path)
    assert got["type"] == "InvalidModelError", got
    assert expect in got["message"] and str(path) in got["message"]


def test_unknown_architecture_is_refused_by_the_engine(tmp_path, tiny_model):
    # a well-formed GGUF whose architecture llama.cpp does not know: the engine refuses it
    data = tiny_model.read_bytes()
    path = tmp_path / "alien.gguf"
    path.write_bytes(data.replace(b"\x05\x00\x00\x00\x00\x00\x00\x00llama", b"\x05\x00\x00\x00\x00\x00\x00\x00zzzzz", 1))
    got = load_in_subprocess(path)
    assert got["type"] == "ModelLoadError", got
    assert str(path) in got["message"]


def test_a_good_synthetic_model_loads(tmp_path):
    path = synthetic.write_llama(tmp_path / "ok.gguf", n_layer=1)
    assert load_in_subprocess(path) == {"type": None}
