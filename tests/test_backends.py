"""Choosing the ggml backend: LLAMAHOST_BACKEND and use_backend(), each in a fresh process (the
choice is made once per process). The fallback chain of portable wheels is checked on the
installed wheel by wheels/smoke.py (CI: wheels/check.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import llamahost

BUILT = llamahost.system_info()["backend"].split(",")  # one backend, or a portable build's GPU backends
UNBUILT = next(name for name in ("vulkan", "cuda", "hip") if name not in BUILT)


def python(code: str, backend: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLAMAHOST_BACKEND"}
    if backend is not None:
        env["LLAMAHOST_BACKEND"] = backend
    return subprocess.run([sys.executable, "-c", "import json, llamahost\n" + code], env=env,
                          capture_output=True, text=True, timeout=120)


def test_system_info_reports_the_backend_in_use():
    info = llamahost.system_info()
    assert info["active_backend"] in ("cpu", *BUILT)
    assert info["unavailable_backends"] == {} or info["active_backend"] == "cpu"


def test_forcing_the_cpu():
    done = python("print(json.dumps(llamahost.system_info()))", backend="cpu")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["active_backend"] == "cpu" and "llamahost:" not in done.stderr


def test_forcing_a_backend_that_is_not_there_is_a_clear_error():
    done = python("llamahost.devices()", backend=UNBUILT)
    assert done.returncode != 0
    assert f"RuntimeError: LLAMAHOST_BACKEND={UNBUILT}:" in done.stderr


def test_an_unknown_backend_is_a_value_error():
    done = python("llamahost.devices()", backend="opencl")
    assert "ValueError: LLAMAHOST_BACKEND=opencl: expected one of cpu, cuda, hip, metal, vulkan" in done.stderr


def test_use_backend_before_anything_else_and_only_once():
    done = python(
        "import os\n"
        "llamahost.use_backend('cpu')\n"
        "assert llamahost.system_info()['active_backend'] == 'cpu'\n"
        "assert os.environ['LLAMAHOST_BACKEND'] == 'cpu'  # worker processes inherit it\n"
        f"llamahost.use_backend('{UNBUILT}')\n")
    assert done.returncode != 0
    assert f"LLAMAHOST_BACKEND={UNBUILT}: this process already uses the cpu backend" in done.stderr
