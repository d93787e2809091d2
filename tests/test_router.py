"""One endpoint for many models: routing by the OpenAI ``model`` field, with the real
``openai`` client, streams passed through, /v1/models, /metrics, the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import llamahost
from llamahost.serving.router import Router, models_in_dir
from test_cli import free_port
from test_models import home  # noqa: F401 - an empty library
from llamahost.bench.procfs import alive, children
from test_pool import wait_until

PARAMS = {"n_ctx": 1024, "parallel": 4, "seed": 7, "metrics": True}


@pytest.fixture(scope="module", params=["thread", "process"])
def routed(request, tiny_models):
    """Models "a" and "b" behind one router, with each isolation."""
    with llamahost.Pool(isolation=request.param, idle_ttl=None, health_interval=0.5) as pool:
        handles = {name: pool.get(path, alias=name, **PARAMS) for name, path in zip("ab", tiny_models)}
        with Router(pool, handles, port=0) as router:
            yield router, openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)


def test_two_models_routed_by_name(routed):
    router, client = routed
    for name in "ab":
        out = client.completions.create(model=name, prompt="Hello", max_tokens=3, temperature=0)
        assert out.model == name  # answered by that model's server (its alias)
        assert router.models[name].stats()["requests"] >= 1
    listed = {m.id: m.model_extra["status"]["value"] for m in client.models.list().data}
    assert listed.keys() == {"a", "b"} and set(listed.values()) <= {"loaded", "unloaded"}


def test_unknown_or_missing_model_is_a_json_error(routed):
    router, client = routed
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["type"] == "not_found_error" and "nope" in err.value.body["message"]
    missing = httpx.post(router.url + "/v1/completions", json={"prompt": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["message"] == "model name is missing from the request"
    bad = httpx.post(router.url + "/v1/completions", content=b"{oops", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "error" in bad.json()


def test_a_stream_passes_through_unchanged(routed):
    router, client = routed
    body = {"model": "a", "prompt": "Once upon", "max_tokens": 8, "temperature": 0, "stream": True}
    direct = httpx.post(router.models["a"].url + "/v1/completions", json=body, timeout=60)
    through = httpx.post(router.url + "/v1/completions", json=body, timeout=60)
    assert through.headers["content-type"] == direct.headers["content-type"]
    events = [[e for e in r.text.split("\n\n") if e] for r in (direct, through)]
    assert len(events[0]) == len(events[1]) == 10 and events[1][-1] == "data: [DONE]"  # 8 tokens, the end, [DONE]
    pieces = [c.choices[0].text for c in client.completions.create(
        model="a", prompt="Once upon", max_tokens=8, temperature=0, stream=True)]
    plain = client.completions.create(model="a", prompt="Once upon", max_tokens=8, temperature=0)
    assert "".join(pieces) == plain.choices[0].text


def test_get_routes_take_the_model_from_the_query(routed):
    router, _ = routed
    props = httpx.get(router.url + "/props", params={"model": "b"}, timeout=30).json()
    assert props["model_alias"] == "b"
    assert httpx.get(router.url + "/health").json() == {"status": "ok"}


def test_eight_concurrent_clients_across_two_models(routed):
    router, client = routed
    before = {n: h.stats()["requests"] for n, h in router.models.items()}

    def one(i: int) -> tuple[str, str]:
        name = "ab"[i % 2]
        messages = [{"role": "user", "content": f"Count to {i}."}]
        if i % 4 < 2:
            out = client.chat.completions.create(model=name, messages=messages, max_tokens=12)
            return name, out.model
        chunks = list(client.chat.completions.create(model=name, messages=messages, max_tokens=12, stream=True))
        return name, chunks[-1].model

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(16)))
    assert all(asked == answered for asked, answered in results)
    assert {n: h.stats()["requests"] - before[n] for n, h in router.models.items()} == {"a": 8, "b": 8}


def test_metrics_per_model_and_pool_wide(routed):
    router, client = routed
    client.completions.create(model="a", prompt="x", max_tokens=4)
    text = httpx.get(router.url + "/metrics").text
    for series in ('llamahost_model_requests_total{model="a"}', 'llamahost_model_tokens_per_second{model="b"}',
                   'llamahost_model_queue_length{model="a"}', 'llamahost_model_memory_bytes{model="a"}',
                   'llamahost_model_evictions_total{model="b"}', 'llamahost_model_restarts_total{model="a"}',
                   "llamahost_pool_memory_budget_bytes", "llamahost_pool_requests_total",
                   "llamahost_pool_loads_total", 'llamacpp:tokens_predicted_total{model="a"}'):
        assert series in text, series
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if not line.startswith("#")}
    assert values['llamahost_model_loaded{model="a"}'] == 1
    assert values["llamahost_pool_memory_used_bytes"] == sum(
        values[f'llamahost_model_memory_bytes{{model="{n}"}}'] for n in "ab") > 0


def test_a_killed_worker_gives_requests_in_flight_a_503_over_http(tiny_models):
    with llamahost.Pool(isolation="process", idle_ttl=None, health_interval=0.2) as pool:
        # "a" has room for a long answer: the kill must land while it is being generated
        handles = {"a": pool.get(tiny_models[0], n_ctx=16384, parallel=1, seed=7),
                   "b": pool.get(tiny_models[1], **PARAMS)}
        with Router(pool, handles, port=0) as router:
            body = {"model": "a", "prompt": "Go on:", "max_tokens": 100000, "ignore_eos": True}
            for name in "ab":
                assert httpx.post(router.url + "/v1/completions", json={"model": name, "prompt": "x", "max_tokens": 1},
                                  timeout=60).status_code == 200
            victim = handles["a"].pid

            def kill_while_generating():
                wait_until(lambda: any(s["is_processing"] for s in httpx.get(handles["a"].url + "/slots").json()),
                           30, "the long answer to start")
                os.kill(victim, signal.SIGKILL)

            threading.Thread(target=kill_while_generating).start()
            answer = httpx.post(router.url + "/v1/completions", json=body, timeout=120)
            assert answer.status_code == 503 and answer.json()["error"]["type"] == "unavailable_error"
            again = httpx.post(router.url + "/v1/completions", json={"model": "a", "prompt": "x", "max_tokens": 1},
                               timeout=60)
            assert again.status_code == 200 and handles["a"].pid != victim


def test_api_key_guards_the_endpoint(tiny_models):
    with llamahost.Pool(idle_ttl=None) as pool, \
            Router(pool, {"a": pool.get(tiny_models[0], n_ctx=512)}, port=0, api_key="k3y") as router:
        assert httpx.get(router.url + "/health").status_code == 200
        assert httpx.get(router.url + "/v1/models").status_code == 401
        good = openai.OpenAI(base_url=router.url + "/v1", api_key="k3y", max_retries=0)
        assert good.completions.create(model="a", prompt="x", max_tokens=1).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=router.url + "/v1", api_key="bad", max_retries=0).models.list()


def test_models_dir_reads_as_llama_server_does(tmp_path):
    for name in ("a.gguf", "mmproj-a.gguf", "big-00001-of-00002.gguf", "big-00002-of-00002.gguf", "notes.txt"):
        (tmp_path / name).touch()
    (tmp_path / "vision").mkdir()
    for name in ("model-Q4_K_M.gguf", "mmproj-model-f16.gguf"):
        (tmp_path / "vision" / name).touch()
    (tmp_path / "empty").mkdir()
    found = models_in_dir(tmp_path)
    assert {name: (path.name, flags) for name, (path, flags) in found.items()} == {
        "a": ("a.gguf", []), "big-00001-of-00002": ("big-00001-of-00002.gguf", []),
        "vision": ("model-Q4_K_M.gguf", ["--mmproj", str(tmp_path / "vision" / "mmproj-model-f16.gguf")])}


def test_models_dir_chooses_a_folders_file_as_resolve_does(tmp_path, home):
    """One rule for a folder of quantizations, from `llamahost serve --models-dir` and from resolve():
    the largest that fits, not the first by name."""
    import synthetic

    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    for tag, weights in (("Q2_K", "Q4_0"), ("Q4_K_M", "Q8_0"), ("Q8_0", "F16")):  # sizes grow with the tag
        synthetic.write_llama(folder / f"m-{tag}.gguf", n_layer=1, weight_type=weights)
    chosen = models_in_dir(tmp_path / "models")["m"][0]
    assert chosen == llamahost.resolve(folder).path == folder / "m-Q8_0.gguf"


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_serve_several_models_then_ctrl_c(tiny_models, tmp_path, isolation):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "c.gguf").symlink_to(tiny_models[2])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve", f"a={tiny_models[0]}", f"b={tiny_models[1]}",
                             "--models-dir", str(folder), "--isolation", isolation, "--port", str(port), "-c", "512",
                             "-np", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "a, b, c" in line, line + (proc.stderr.read() if proc.poll() else "")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert sorted(m.id for m in client.models.list().data) == ["a", "b", "c"]
        for name in "abc":
            assert client.completions.create(model=name, prompt="hi", max_tokens=2).model == name
        workers = children(proc.pid)
        assert len(workers) == (3 if isolation == "process" else 0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stdout.read()
        assert not any(alive(w) for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_several_models_rejects_a_bad_flag(tiny_models):
    done = subprocess.run([sys.executable, "-m", "llamahost", "serve", *map(str, tiny_models[:2]), "--no-such-flag"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--no-such-flag" in done.stderr


def _raw(url: str, head: bytes, body: bytes = b"", timeout: float = 5) -> tuple[int, bytes]:
    """One request written byte by byte on a socket: its status and what came back before the router
    closed the connection (or the timeout)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except socket.timeout:
            pass
    return int(answer.split(b" ", 2)[1]), answer


def test_the_router_checks_the_caller_before_it_reads_a_body(tiny_model):
    """Refusals come before the body is read: a request without the key that announces a gigabyte
    gets its 401 at once, and Content-Lengths that are not sizes (or too large) are refused."""
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_model, n_ctx=256)
        with Router(pool, {"m": handle}, port=0, api_key="secret", max_body=1 << 20) as router:
            started = time.monotonic()
            status, answer = _raw(router.url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000")
            assert status == 401 and b"Invalid API Key" in answer and time.monotonic() - started < 2
            assert handle.state == "unloaded"
            key = b"\r\nAuthorization: Bearer secret"
            for length, expected in ((b"-5", 400), (b"12abc", 400), (b"99999999999999999999", 413), (b"2000000", 413)):
                status, answer = _raw(router.url, b"POST /v1/completions HTTP/1.1\r\nHost: x" + key +
                                      b"\r\nContent-Length: " + length)
                assert status == expected and b'"error"' in answer, (length, answer[:300])
            status, _ = _raw(router.url, b"POST /v1/completions HTTP/1.1\r\nHost: x" + key +
                             b"\r\nTransfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n")
            assert status == 411
            body = b'{"model": "m", "prompt": "Hi", "max_tokens": 1}'
            status, _ = _raw(router.url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close" + key +
                             b"\r\nContent-Length: " + str(len(body)).encode(), body, timeout=60)
            assert status == 200
            assert httpx.get(router.url + "/health").status_code == 200  # no key needed, as llama-server
