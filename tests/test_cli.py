"""The command line, run as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

import llamahost


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llamahost", *args], capture_output=True, text=True, timeout=timeout)


def test_devices():
    done = run_cli("devices")
    assert done.returncode == 0, done.stderr
    assert "CPU" in done.stdout
    data = json.loads(run_cli("devices", "--json").stdout)
    assert any(d["type"] == "cpu" and d["memory_total"] > 0 for d in data["devices"])
    assert data["system"]["llama_cpp_build"] == "b11312"


def test_devices_and_system_info_from_python():
    found = llamahost.devices()
    assert {"name", "description", "type", "backend", "memory_total", "memory_free"} <= set(found[0])
    info = llamahost.system_info()
    assert info["backend"] == "cpu" and "CPU" in info["backends"]
    assert info["llama_cpp_build"] == "b11312"
    assert isinstance(info["cpu_features"], dict)


def test_help():
    done = run_cli("--help")
    assert done.returncode == 0 and "serve" in done.stdout and "devices" in done.stdout
    serve_help = run_cli("serve", "--help")
    assert serve_help.returncode == 0
    assert "llamahost serve [MODEL]" in serve_help.stdout
    assert "--ctx-size" in serve_help.stdout + serve_help.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_then_ctrl_c(tiny_model):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve", str(tiny_model), "--port", str(port),
                             "-c", "512"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line + proc.stderr.read() if proc.poll() is not None else line
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_with_no_model_serves_the_demo_model_with_the_dashboard(tmp_path):
    port = free_port()
    env = dict(os.environ)
    env.pop("LLAMA_ARG_MODEL", None)
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve", "--port", str(port), "-c", "512",
                             "--models-preset", str(tmp_path / "presets.ini")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "serving" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "gemma-3-270m" in line, line
        base = f"http://127.0.0.1:{port}"
        assert "llamahost" in httpx.get(f"{base}/dashboard", timeout=30).text
        # one model served: a request need not name it, as with a single llama-server
        answer = httpx.post(f"{base}/v1/chat/completions", timeout=120,
                            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).json()
        assert "gemma-3-270m" in answer["model"] and answer["usage"]["completion_tokens"] > 0
        [listed] = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
        assert "gemma-3-270m" in listed["id"] and listed["status"]["value"] == "loaded"
        assert listed["status"]["args"][listed["status"]["args"].index("-c") + 1] == "512"
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_rejects_a_bad_flag(tiny_model):
    done = run_cli("serve", str(tiny_model), "--no-such-flag")
    assert done.returncode == 2
    assert "--no-such-flag" in done.stderr


def test_serve_reads_llama_arg_variables(tiny_model):
    port = free_port()
    env = dict(os.environ, LLAMA_ARG_MODEL=str(tiny_model), LLAMA_ARG_CTX_SIZE="768", LLAMA_ARG_N_PARALLEL="1",
               LLAMA_ARG_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f":{port}" in line and "tiny-llama" in line, line
        props = httpx.get(f"http://127.0.0.1:{port}/props", timeout=30).json()
        assert props["default_generation_settings"]["n_ctx"] == 768
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_stops_on_sigint_even_as_a_background_job(tiny_model):
    # a shell's background job starts with SIGINT ignored; serve still stops on it, as llama-server does
    port = free_port()
    proc = subprocess.Popen(["sh", "-c", f'trap "" INT; exec "{sys.executable}" -m llamahost serve "{tiny_model}" '
                                         f'--port {port} -c 512'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert f":{port}" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()

