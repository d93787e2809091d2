"""The management API of the multi-model endpoint (docs/API.md) through real HTTP: devices and
what a loaded model holds there, models served with given parameters and kept as presets, a
configuration that fits, pulls with progress events that can be cancelled (leaving nothing in
the library), and bad input answered with JSON errors."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

import llamahost
from llamahost import Router
from test_models import gguf_files, home, hub  # noqa: F401 - the Hub fixtures


@pytest.fixture
def endpoint(tiny_models, home, hub):  # noqa: F811 - the Hub fixtures
    with llamahost.Pool(idle_ttl=None) as pool, \
            Router(pool, {}, port=0, model_args=["-c", "512"], presets_path=home / "presets.ini") as router, \
            httpx.Client(base_url=router.url, timeout=120) as http:
        router.add("tiny", str(tiny_models[0]))
        yield router, http


def events_until(url: str, seen: list[dict], predicate, timeout: float = 60) -> None:
    with httpx.stream("GET", url + "/models/sse", timeout=timeout) as r:
        deadline = time.monotonic() + timeout
        for line in r.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
                if predicate(seen[-1]):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"no such event in {timeout} s: {seen}")


def test_devices_show_what_a_loaded_model_holds(endpoint):
    router, http = endpoint
    assert all(d["models"] == [] for d in http.get("/api/devices").json()["devices"])
    assert http.post("/api/models/load", json={"model": "tiny"}).json() == {"success": True}
    deadline = time.monotonic() + 60
    while http.get("/api/models").json()[0]["state"] != "loaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = next(d for d in http.get("/api/devices").json()["devices"] if d["type"] == "cpu")
    held = router.served()["tiny"].stats()["memory_by_device"]["CPU"]
    assert cpu["models"] == [{"model": "tiny", "bytes": held}] and held > 0
    assert cpu["memory_total"] >= cpu["memory_free"] > 0


def test_a_model_served_with_parameters_that_fit_and_kept_as_a_preset(endpoint, tiny_models, home):
    router, http = endpoint
    proposal = http.post("/api/propose", json={"model": str(tiny_models[1])}).json()
    assert proposal["estimate"]["fits"] and proposal["params"]["n_ctx"] == 4096  # the trained context fits here
    params = dict(proposal["params"], n_ctx=1024)
    estimate = http.post("/api/estimate", json={"model": str(tiny_models[1]), "params": params}).json()
    assert estimate["n_ctx"] == 1024 and estimate["fits"]
    answer = http.post("/api/models", json={"model": str(tiny_models[1]), "name": "second", "params": params})
    assert answer.json() == {"success": True, "name": "second"}
    saved = http.get("/api/presets").json()
    assert "[second]" in saved["ini"] and "ctx-size = 1024" in saved["ini"]
    assert "--ctx-size" in saved["presets"]["second"]
    deadline = time.monotonic() + 60
    while router.served()["second"].state != "loaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert router.served()["second"].request("GET", "/props").json()["default_generation_settings"]["n_ctx"] == 1024
    listed = {m["name"]: m for m in http.get("/api/models").json()}
    assert listed["second"]["state"] == "loaded" and listed["second"]["memory_bytes"] > 0
    # next time, the preset's options come back with the name
    with llamahost.Pool(idle_ttl=None) as pool, Router(pool, {}, port=0, presets_path=home / "presets.ini") as again:
        assert "1024" in again.add("second", str(tiny_models[1])).args


def test_a_pull_reports_progress_and_a_cancelled_one_leaves_nothing(endpoint, hub, home):  # noqa: F811
    router, http = endpoint
    hub.stall_after = 12 << 20  # past huggingface_hub's first 10 MiB chunk: one progress report, then a stall
    seen: list[dict] = []
    listener = threading.Thread(target=events_until, args=(router.url, seen,
                                                           lambda e: e["event"] == "download_failed"))
    listener.start()
    time.sleep(0.3)  # listening (a stream has no backlog)
    assert http.post("/api/pulls", json={"model": "test-org/chat-GGUF"}).json() == {"success": True}
    assert hub.stalled.wait(60)
    deadline = time.monotonic() + 30
    while not http.get("/api/pulls").json() or not http.get("/api/pulls").json()[0]["done"]:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    progress = http.get("/api/pulls").json()[0]
    assert progress["model"] == "test-org/chat-GGUF" and 0 < progress["done"] < progress["total"]
    assert http.delete("/api/pulls", params={"model": "test-org/chat-GGUF"}).json() == {"success": True}
    hub.release.set()  # the stalled transfer goes on, and the cancelled pull stops at its next bytes
    listener.join(60)
    assert [e["event"] for e in seen if e["event"].startswith("download")][-1] == "download_failed"
    assert any(e["event"] == "download_progress" for e in seen)
    assert http.get("/api/library").json() == [] and not list((home / "models").rglob("chat-F32.gguf"))
    assert http.get("/api/pulls").json() == []

    hub.requests.clear()  # pulled again: the part downloaded before is not downloaded again
    assert http.post("/api/pulls", json={"model": "test-org/chat-GGUF"}).json() == {"success": True}
    deadline = time.monotonic() + 60
    while not http.get("/api/library").json():
        assert time.monotonic() < deadline, "the second pull did not finish"
        time.sleep(0.05)
    ranges = [rng for method, path, rng in hub.requests if method == "GET" and path.endswith("chat-F32.gguf")]
    assert ranges and all(rng and not rng.startswith("bytes=0-") for rng in ranges), ranges


def test_bad_input_gets_json_errors(endpoint, tiny_models):
    router, http = endpoint
    cases = [
        ("POST", "/api/models", {"model": "no/such-model.gguf"}, 404),
        ("POST", "/api/models", {"model": str(tiny_models[1]), "params": {"n_ctx": "lots"}}, 400),
        ("POST", "/api/models", {"model": str(tiny_models[1]), "params": ["not", "an", "object"]}, 400),
        ("POST", "/api/models", {"model": str(tiny_models[1]), "name": "tiny"}, 400),  # taken, by another file
        ("POST", "/api/estimate", {"model": 5}, 400),
        ("GET", "/api/hub/files?repo=test-org/tiny-GGUF&n_ctx=abc", None, 400),
        ("GET", "/api/hub/files", None, 400),
        ("DELETE", "/api/pulls?model=nothing/pulling", None, 404),
        ("DELETE", "/api/library?model=never-pulled", None, 404),
        ("GET", "/api/no-such-route", None, 404),
    ]
    for method, path, body, status in cases:
        answer = http.request(method, path, json=body)
        assert answer.status_code == status and answer.json()["error"]["message"], (method, path, answer.text)
    refused = http.post("/api/models", json={"model": str(tiny_models[1])}, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "second" not in router.served()


def test_a_served_model_configured_again_is_served_so_from_then_on(endpoint, home):
    router, http = endpoint
    assert http.post("/api/propose", json={"model": "tiny"}).json()["estimate"]["fits"]  # by its served name
    answer = http.post("/api/models", json={"model": "tiny", "params": {"n_ctx": 768, "parallel": 1}})
    assert answer.json() == {"success": True, "name": "tiny"}
    deadline = time.monotonic() + 60
    while router.served()["tiny"].state != "loaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert router.served()["tiny"].request("GET", "/props").json()["default_generation_settings"]["n_ctx"] == 768
    assert "ctx-size = 768" in http.get("/api/presets").json()["ini"]
