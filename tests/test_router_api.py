"""The router against upstream's router mode (``llama-server --models-dir``, built from the same
vendor tree) on the same folder of models: the same routes answer in the same shapes (the keys
of /props, of each /v1/models entry before and after a load, of the /models/sse events, and of
/models/load and /models/unload answers and errors), so llama.cpp's web UI works with either."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from llamahost.bench.peers import llama_server, llamahost_serve


@pytest.fixture(scope="module")
def routers(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("router-api")
    for i, path in enumerate(tiny_models[:2]):
        shutil.copy(path, folder / f"tiny-{i}.gguf")
    flags = ["--models-dir", str(folder), "-c", "512", "-np", "1"]
    with llama_server(flags) as upstream, llamahost_serve(flags) as ours:
        yield {"upstream": upstream.url, "llamahost": ours.url}


def both(routers, method: str, path: str, **kwargs) -> dict[str, httpx.Response]:
    return {name: httpx.request(method, url + path, timeout=120, **kwargs) for name, url in routers.items()}


def keys(data) -> set:
    return set(data) if isinstance(data, dict) else set()


def entries(routers) -> dict[str, dict[str, dict]]:
    return {name: {e["id"]: e for e in r.json()["data"]} for name, r in both(routers, "GET", "/v1/models").items()}


def wait_for(routers, model: str, status: str) -> dict[str, dict]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = {name: found[model] for name, found in entries(routers).items()}
        if all(e["status"]["value"] == status for e in now.values()):
            return now
        time.sleep(0.1)
    raise AssertionError(f"{model} did not become {status}: {now}")


def sse_events(url: str, seen: list[dict], stop: threading.Event) -> None:
    with httpx.stream("GET", url + "/models/sse", timeout=None) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:]))
            if stop.is_set():
                return


def test_props_and_models_have_upstreams_shape(routers):
    props = both(routers, "GET", "/props")
    assert props["llamahost"].json()["role"] == props["upstream"].json()["role"] == "router"
    assert keys(props["llamahost"].json()) == keys(props["upstream"].json())
    listed = entries(routers)
    assert set(listed["llamahost"]) == set(listed["upstream"]) == {"tiny-0", "tiny-1"}
    for model in ("tiny-0", "tiny-1"):
        ours, theirs = listed["llamahost"][model], listed["upstream"][model]
        assert keys(ours) == keys(theirs) and keys(ours["status"]) == keys(theirs["status"])
        assert ours["status"]["value"] == theirs["status"]["value"] == "unloaded"
        assert ours["source"] == theirs["source"] == "models_dir"


def test_load_events_and_unload_as_upstream(routers):
    seen = {name: [] for name in routers}
    stop = threading.Event()
    listeners = [threading.Thread(target=sse_events, args=(url, seen[name], stop), daemon=True)
                 for name, url in routers.items()]
    for listener in listeners:
        listener.start()
    time.sleep(0.5)  # both listening before the load (an event stream has no backlog to observe)
    loaded = both(routers, "POST", "/models/load", json={"model": "tiny-0"})
    assert {name: r.json() for name, r in loaded.items()} == {"upstream": {"success": True},
                                                              "llamahost": {"success": True}}
    now = wait_for(routers, "tiny-0", "loaded")
    assert keys(now["llamahost"]) == keys(now["upstream"])  # with what the model's own server says of it
    again = both(routers, "POST", "/models/load", json={"model": "tiny-0"})
    assert {r.status_code for r in again.values()} == {400}
    assert keys(again["llamahost"].json()["error"]) == keys(again["upstream"].json()["error"])

    unloaded = both(routers, "POST", "/models/unload", json={"model": "tiny-0"})
    assert all(r.json() == {"success": True} for r in unloaded.values())
    wait_for(routers, "tiny-0", "unloaded")
    assert {r.status_code for r in both(routers, "POST", "/models/unload", json={"model": "tiny-0"}).values()} == {400}
    missing = both(routers, "POST", "/models/load", json={"model": "nope"})
    assert {r.status_code for r in missing.values()} == {404}

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
            any(e.get("data", {}).get("status") == "unloaded" for e in events) for events in seen.values()):
        time.sleep(0.1)
    stop.set()
    for name, events in seen.items():
        statuses = [e["data"]["status"] for e in events if e["model"] == "tiny-0" and "status" in e.get("data", {})]
        assert "loaded" in statuses and statuses[-1] == "unloaded", (name, events)
        assert all(keys(e) <= {"model", "event", "data"} for e in events), (name, events)
