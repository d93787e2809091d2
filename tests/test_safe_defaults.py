"""Safe defaults for a server others may reach: loopback unless told otherwise (and a warning
when listening elsewhere without an API key), the API key on every route but health, slot
files kept inside their folder, request model names that cannot name a path, CORS off.
Every server here listens on loopback; the "exposed" ones get an address that cannot bind."""

from __future__ import annotations

import subprocess
import sys
import warnings

import httpx
import pytest

import llamahost
from llamahost import Router
from llamahost.core.security import ExposedServerWarning, is_loopback, key_matches
from test_cli import free_port

UNBINDABLE = "192.0.2.1"  # TEST-NET-1: no machine holds it, so nothing is ever exposed
PUBLIC = ("/health", "/v1/health")


def listening_addresses(port: int) -> set[str]:
    """The local addresses this machine listens on at ``port`` (from /proc/net/tcp)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address if len(address) == width else "?")
    return found


def test_a_server_listens_on_loopback_only_by_default(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=256) as srv:
        assert srv.host == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")
        assert listening_addresses(srv.port) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_llamahost_serve_listens_on_loopback_only_by_default(tiny_model):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve", str(tiny_model), "--port", str(port),
                             "-c", "256"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "http://127.0.0.1:" in proc.stdout.readline()
        assert listening_addresses(port) == {"0100007F"}
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("host, exposed", [("127.0.0.1", False), ("127.0.0.2", False), ("localhost", False),
                                           ("::1", False), ("[::1]", False), ("/tmp/llama.sock", False),
                                           ("0.0.0.0", True), ("::", True), ("192.168.1.10", True),
                                           ("example.com", True)])
def test_which_hosts_are_loopback(host, exposed):
    assert is_loopback(host) is not exposed


def test_a_warning_when_listening_beyond_loopback_without_an_api_key(tiny_model):
    with pytest.warns(ExposedServerWarning, match=UNBINDABLE), pytest.raises(llamahost.ModelLoadError):
        llamahost.Server(tiny_model, n_ctx=256, host=UNBINDABLE)
    with pytest.warns(ExposedServerWarning, match=UNBINDABLE), pytest.raises(llamahost.ModelLoadError):
        llamahost.Server.from_args(["-m", str(tiny_model), "--host", UNBINDABLE])  # as `llamahost serve` starts
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExposedServerWarning)
        with pytest.raises(llamahost.ModelLoadError):
            llamahost.Server(tiny_model, n_ctx=256, host=UNBINDABLE, api_key="k")
        with llamahost.Server(tiny_model, n_ctx=256, host="127.0.0.1"):
            pass
    with llamahost.Pool() as pool:
        with pytest.warns(ExposedServerWarning, match="router"), pytest.raises(OSError):
            Router(pool, {}, host=UNBINDABLE, port=0)


def every_route(paths: list[str]) -> list[tuple[str, str]]:
    return [(method, path.replace(":id_slot", "0")) for path in paths for method in ("GET", "POST")]


def test_the_api_key_guards_every_route_but_health(tiny_model, tmp_path):
    with llamahost.Server(tiny_model, n_ctx=256, api_key="key-one,s3cret", metrics=True,
                          slot_save_path=tmp_path) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        routes = every_route(srv.routes())
        assert len(routes) > 40
        for method, path in routes:
            status = http.request(method, path, json={}).status_code
            assert (status == 401) is (path not in PUBLIC), (method, path, status)
        for key in ("s3cre", "s3crets", "S3cret", "Bearer s3cret", "key-one,s3cret"):
            assert http.get("/props", headers={"Authorization": f"Bearer {key}"}).status_code == 401, key
        assert http.get("/props", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get("/props", headers={"Authorization": "Bearer key-one"}).status_code == 200
        assert http.get("/props", headers={"X-Api-Key": "s3cret"}).status_code == 200


def test_the_router_api_key_guards_every_route_but_health(tiny_model):
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_model, n_ctx=256)
        with Router(pool, {"m": handle}, port=0, api_key="s3cret") as router, \
                httpx.Client(base_url=router.url, timeout=60) as http:
            for method, path in every_route(["/v1/models", "/metrics", "/props", "/v1/chat/completions", "/slots",
                                             "/no/such/route"] + list(PUBLIC)):
                status = http.request(method, path + "?model=m", json={"model": "m"}).status_code
                assert (status == 401) is (path not in PUBLIC), (method, path, status)
            assert http.get("/props?model=m", headers={"Authorization": "Bearer s3cre"}).status_code == 401
            assert http.get("/props?model=m", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert key_matches("b", ["a", "b"]) and not key_matches("", ["a"]) and not key_matches("ab", ["a"])


ESCAPES = ["../outside.bin", "../../etc/passwd", "/tmp/absolute.bin", "sub/inner.bin", "..", ".", "a\\..\\b",
           "..\\outside.bin", "x" * 300, "bad\x00name", "", " lead", "trail.", "\u2215slash", "\uff0e\uff0e"]


def test_slot_files_stay_in_their_folder(tiny_model, tmp_path):
    slots = tmp_path / "slots"
    slots.mkdir()
    before = set(tmp_path.rglob("*"))
    with llamahost.Server(tiny_model, n_ctx=256, slot_save_path=slots) as srv:
        srv.complete("Remember this", max_tokens=2)
        for name in ESCAPES:
            for action in ("save", "restore"):
                r = srv.request("POST", f"/slots/0?action={action}", {"filename": name})
                assert r.status == 400 and r.json()["error"]["message"] == "Invalid filename", (name, r.body)
                over_http = httpx.post(f"{srv.url}/slots/0?action={action}", json={"filename": name})
                assert over_http.status_code == 400, (name, over_http.text)
        assert set(tmp_path.rglob("*")) == before
        assert srv.request("POST", "/slots/0?action=save", {"filename": "ok.bin"}).ok
        assert srv.request("POST", "/slots/0?action=restore", {"filename": "ok.bin"}).ok
        assert set(tmp_path.rglob("*")) == before | {slots / "ok.bin"}


def test_request_model_names_cannot_reach_paths_beyond_the_models_folder(tiny_models, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "served.gguf").write_bytes(tiny_models[0].read_bytes())
    outside = tiny_models[1]  # a real model, outside the folder
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llamahost", "serve", "--models-dir", str(folder), "--port",
                             str(port), "-c", "256"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        for name in (str(outside), str(outside.with_suffix("")), "../" + outside.name, f"{folder}/../{outside.name}",
                     "served/../../x", "/etc/passwd", "served.gguf", "Qwen/Qwen3-8B-GGUF", "."):
            r = httpx.post(url + "/v1/completions", json={"model": name, "prompt": "x", "max_tokens": 1}, timeout=60)
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", (name, r.text)
            assert httpx.get(url + "/props", params={"model": name}, timeout=60).status_code == 404
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["served"]
        ok = httpx.post(url + "/v1/completions", json={"model": "served", "prompt": "x", "max_tokens": 1}, timeout=60)
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_single_model_server_ignores_the_request_model_field(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=256) as srv:
        for name in ("/etc/passwd", "../other.gguf", "Qwen/Qwen3-8B-GGUF"):
            out = srv.complete("x", max_tokens=1, model=name)
            assert out["choices"] and srv.props()["model_path"] == str(tiny_model)


def test_pages_of_this_machine_may_call_a_server_others_only_when_named(tiny_model, tiny_models):
    """By default a page served from this machine (localhost, 127.0.0.1, [::1], any port) may call
    a server or the router; a page of another origin gets no Access-Control-Allow-Origin (the
    browser keeps the answer from it) and may not manage the router's models; --cors-origins adds
    origins, as in llama-server."""
    evil, local = "https://evil.example", "http://localhost:5173"
    with llamahost.Pool(idle_ttl=None) as pool:
        servers = [llamahost.Server(tiny_model, n_ctx=256),
                   llamahost.Server.from_args(["-m", str(tiny_model), "--port", "0", "-c", "256"])]  # as `serve` starts
        router = Router(pool, {"m": pool.get(tiny_models[1], n_ctx=256)}, port=0)
        try:
            for url in [s.url for s in servers] + [router.url]:
                for origin in (local, "http://127.0.0.1:3000", "http://[::1]:8000"):
                    answer = httpx.get(url + "/props", headers={"Origin": origin})
                    assert answer.headers.get("access-control-allow-origin") == origin, url
                    preflight = httpx.options(url + "/v1/chat/completions",
                                              headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
                    assert preflight.headers.get("access-control-allow-origin") == origin, url
                assert "access-control-allow-origin" not in httpx.get(url + "/props", headers={"Origin": evil}).headers
                preflight = httpx.options(url + "/v1/chat/completions",
                                          headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
                assert "access-control-allow-origin" not in preflight.headers
            refused = httpx.post(router.url + "/models/load", json={"model": "m"}, headers={"Origin": evil})
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
            assert router.models["m"].state == "unloaded"
        finally:
            for srv in servers:
                srv.close()
            router.close()
    with llamahost.Server(tiny_model, n_ctx=256, cors_origins="https://app.example") as srv:
        allowed = httpx.options(srv.url + "/v1/chat/completions",
                                headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    with llamahost.Pool(idle_ttl=None) as pool, \
            Router(pool, {}, port=0, cors_origins=["https://app.example"]) as router:
        assert httpx.get(router.url + "/props", headers={"Origin": "https://app.example"}).headers[
            "access-control-allow-origin"] == "https://app.example"
