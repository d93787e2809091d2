"""ggml RPC workers on loopback (engine/rpc_worker.py, core/rpc.py): the demo model split over
this machine and two worker processes answers as a local load does, the estimate is the split
load's memory to the byte, a worker killed mid-generation fails that model's request with the
reason and leaves this process alone, and a worker of another protocol version, or none at all,
is refused by name before llama.cpp connects to it (which would end the process)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import httpx
import pytest

import llamahost as lh
from llamahost.bench.peers import llamahost_serve
from llamahost.core import rpc

# the same kernels on both sides: a local load repacks weights for the CPU, which an RPC device does not
SPLIT = dict(n_ctx=1024, parallel=1, n_gpu_layers=12, tensor_split=[1, 1], no_repack=True)
GREEDY = {"prompt": "The capital of France is", "n_predict": 24, "temperature": 0}


@pytest.fixture(scope="module")
def workers():
    with lh.RPCWorker(threads=1) as first, lh.RPCWorker(threads=1) as second:
        yield [first.endpoint, second.endpoint]


def test_the_workers_devices_are_listed_with_their_memory(workers):
    found = [d for d in lh.devices(rpc=workers) if d["type"] == "rpc"]
    assert [(d["name"], d["description"]) for d in found] == [("RPC0", workers[0]), ("RPC1", workers[1])]
    assert all(0 < d["memory_free"] <= d["memory_total"] for d in found)
    shown = subprocess.run([sys.executable, "-m", "llamahost", "devices", "--rpc", ",".join(workers)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "RPC1" in shown.stdout and workers[1] in shown.stdout


def test_a_model_split_over_two_workers_answers_as_a_local_load(demo_model, workers):
    with lh.Server(demo_model, n_ctx=1024, parallel=1, no_repack=True) as local:
        expected = local.request("POST", "/completion", GREEDY).json()["content"]
    with lh.Pool(idle_ttl=None) as pool:
        handle = pool.get(demo_model, rpc=workers, **SPLIT)
        answer = handle.request("POST", "/completion", GREEDY).json()["content"]
        assert handle.pid != os.getpid()  # a model using RPC workers always has a process of its own
        held = pool.stats()[0]["memory_by_device"]
    assert answer == expected and len(answer) > 40
    assert set(held) == {"RPC0", "RPC1", "CPU"} and all(held.values())


def test_the_estimate_is_the_split_loads_memory(demo_model, workers):
    est = lh.estimate(demo_model, rpc=workers, **SPLIT)
    code = (f"import json, llamahost as lh\n"
            f"with lh.Server({str(demo_model)!r}, rpc={workers!r}, rpc_in_process=True, **{SPLIT!r}) as s:\n"
            f"    print(json.dumps({{d.name: d.used for d in s.memory_breakdown()}}))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    real = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert set(real) == {"RPC0", "RPC1", "CPU"}
    for dev in est.devices:
        assert abs(dev.used - real[dev.name]) <= 0.02 * real[dev.name], (dev.name, dev.used, real[dev.name])


def test_a_worker_killed_mid_generation_fails_the_request_with_the_reason(demo_model):
    with lh.RPCWorker(threads=1) as first, lh.RPCWorker(threads=1) as second, lh.Pool(idle_ttl=None) as pool:
        handle = pool.get(demo_model, rpc=[first.endpoint, second.endpoint], **SPLIT)
        handle.request("POST", "/completion", {"prompt": "Hi", "n_predict": 1})
        threading.Timer(1.0, second.kill).start()
        started = time.monotonic()
        answer = handle.request("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 2000,
                                                        "ignore_eos": True})
        assert time.monotonic() - started < 60
        assert answer.status == 503
        assert "Remote RPC server crashed" in answer.json()["error"]["message"]
        with pytest.raises(lh.ModelLoadError, match=f"RPC worker {second.endpoint} cannot be reached"):
            handle.request("POST", "/completion", {"prompt": "Hi", "n_predict": 1})
    with lh.Server(demo_model, n_ctx=256) as srv:  # this process goes on, and its engine with it
        assert srv.request("POST", "/completion", {"prompt": "Hi", "n_predict": 1}).status == 200


@pytest.fixture
def foreign_worker():
    """A worker that answers the handshake with the next major protocol version."""
    listener = socket.create_server(("127.0.0.1", 0))
    major, minor, patch = rpc.PROTOCOL
    version = (major + 1, minor, patch)

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1 + 8 + rpc.CONN_CAPS_SIZE, socket.MSG_WAITALL)
                conn.sendall(struct.pack("<Q", 4 + rpc.CONN_CAPS_SIZE) + bytes(version) + bytes(1 + rpc.CONN_CAPS_SIZE))

    threading.Thread(target=answer, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}", version
    listener.close()


def test_a_worker_of_another_protocol_version_is_refused_naming_both(demo_model, foreign_worker):
    endpoint, version = foreign_worker
    theirs, ours = ".".join(map(str, version)), ".".join(map(str, rpc.PROTOCOL))
    for call in (lambda: lh.devices(rpc=[endpoint]),
                 lambda: lh.estimate(demo_model, rpc=[endpoint], n_ctx=256),
                 lambda: lh.Server(demo_model, rpc=[endpoint], rpc_in_process=True, n_ctx=256)):
        with pytest.raises(lh.RPCWorkerError) as refused:
            call()
        assert f"speaks RPC protocol {theirs}" in str(refused.value) and f"speaks {ours}" in str(refused.value)


def test_a_missing_worker_or_an_in_process_server_is_refused_with_the_reason(demo_model):
    with pytest.raises(lh.RPCWorkerError, match="127.0.0.1:1 cannot be reached"):
        lh.Server(demo_model, rpc=["127.0.0.1:1"], rpc_in_process=True, n_ctx=256)
    with pytest.raises(ValueError, match="worker process"):
        lh.Server(demo_model, rpc=["127.0.0.1:1"], n_ctx=256)
    with pytest.raises(ValueError, match="host:port"):
        lh.devices(rpc=["no-port"])
    # what only reads a command line never connects: the workers do not shape a prompt
    assert lh.count_tokens(demo_model, "Hello", rpc=["127.0.0.1:1"]).exact


def test_llamahost_serve_with_rpc_serves_through_a_worker_process(demo_model, workers):
    with llamahost_serve([str(demo_model), "--rpc", ",".join(workers), "-c", "1024", "-ngl", "12", "-np", "1"]) as srv:
        answer = httpx.post(srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=120)
        assert answer.status_code == 200 and answer.json()["choices"][0]["text"]


def test_the_rpc_server_command_warns_beyond_loopback():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "rpc-server", "--host", "0.0.0.0", "--port", str(port),
                             "--threads", "1"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served = []
    try:
        deadline = time.monotonic() + 60
        while not served and time.monotonic() < deadline:
            try:
                served = rpc.remote_devices(f"127.0.0.1:{port}")  # listening on every address, loopback too
            except lh.RPCWorkerError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert served, err[-2000:]
    assert "ExposedRPCWorkerWarning" in err and "no authentication" in err
