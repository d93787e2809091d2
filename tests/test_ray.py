"""Ray Serve: many models behind one OpenAI-compatible endpoint on a real multi-node Ray cluster
(a head and two worker nodes on loopback, ``ray.cluster_utils.Cluster``), through the real
``openai`` client: routing and streaming, affinity, a client that leaves, a replica killed under
load, the resources reserved from the engine's estimate, scaling up under load and back down,
and Ray's own ``serve run`` with the application builder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import openai
import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster

import llamahost
import synthetic
from llamahost.bench.procfs import alive, children
from llamahost.planning.estimate import DeviceEstimate, Estimate
from llamahost.serving.ray_serve import (REPLICA_HEADER, AppArgs, app, build, estimate_spec, model_specs,
                                         replica_resources)
from test_cli import free_port
from test_pool import wait_until

KEY = "test-key"
PARAMS = {"n_ctx": 8192, "parallel": 2, "threads": 1, "seed": 7}  # 4096 tokens a slot: a long answer takes seconds
# Ray Serve's autoscaling metrics every half second, not ten: read by the nodes' processes when they start
FAST_METRICS = {"RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
                "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5"}


def poll(predicate, timeout: float, what: str) -> None:
    """wait_until, asking twice a second: each question goes through Ray."""
    wait_until(lambda: predicate() or time.sleep(0.5), timeout, what)


def gone(actor: str) -> bool:
    try:
        ray.get_actor(actor, namespace="serve")
    except ValueError:
        return True
    return False


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for c in found for d in descendants(c)]


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPU for replicas: Serve's controller, its HTTP proxy, the ingress) and two
    worker nodes of one CPU each: one Models replica fits on each."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAST_METRICS.items():
            env.setenv(name, value)
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            for _ in range(2):
                nodes.add_node(num_cpus=1)
            ray.init(address=nodes.address, log_to_driver=False)
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
            yield nodes, f"http://127.0.0.1:{port}"
        finally:
            started = descendants(os.getpid())
            try:
                serve.shutdown()
                ray.shutdown()
            finally:
                nodes.shutdown()
            wait_until(lambda: not any(alive(p) for p in started), 30, "every Ray process to end")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_models):
    folder = tmp_path_factory.mktemp("ray-models")
    return {"a": tiny_models[0], "b": tiny_models[1],
            "e": {"model": synthetic.write_model(folder / "bert.gguf", "bert", n_ctx_train=512), "embedding": True,
                  "pooling": "mean", "n_ctx": 512}}


@pytest.fixture(scope="module")
def endpoint(cluster, models):
    """Models a, b (chat) and e (embeddings) on two replicas of two models each, behind one key."""
    _, url = cluster
    serve.run(build(models, params=PARAMS, models_per_replica=2, api_key=KEY,
                    autoscaling_config={"min_replicas": 2, "max_replicas": 2}), name="llm", route_prefix="/llm")
    url += "/llm"  # the application's route prefix: what the models' servers see starts after it
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    # a first, then b once the controller knows where a is: b goes to the replica holding fewer models
    replicas = {name: replica_of(client, name) for name in "ab"}
    assert replicas["a"] != replicas["b"]
    return url, client, replicas


def replica_of(client: openai.OpenAI, name: str) -> str:
    answer = client.completions.with_raw_response.create(model=name, prompt="Hi", max_tokens=1)
    assert answer.parse().model == name
    return answer.headers[REPLICA_HEADER]


def running_replicas() -> int:
    states = serve.status().applications["llm"].deployments["Models"].replica_states
    return states.get("RUNNING", 0)


def test_two_models_over_two_replicas_with_the_openai_client(endpoint):
    url, client, _ = endpoint
    messages = [{"role": "user", "content": "Tell me a story."}]
    for name in "ab":
        chat = client.chat.completions.create(model=name, messages=messages, max_tokens=8)
        chunks = list(client.chat.completions.create(model=name, messages=messages, max_tokens=8, stream=True))
        assert chat.model == chunks[-1].model == name and chat.usage.completion_tokens == 8
        assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason == "length"
        plain = client.completions.create(model=name, prompt="Once upon", max_tokens=6, temperature=0)
        pieces = list(client.completions.create(model=name, prompt="Once upon", max_tokens=6, temperature=0,
                                                stream=True))
        assert plain.usage.completion_tokens == 6
        assert "".join(p.choices[0].text for p in pieces if p.choices) == plain.choices[0].text
    vectors = client.embeddings.create(model="e", input=["one", "two", "three"])
    assert [len(v.embedding) for v in vectors.data] == [128] * 3
    assert {m.id for m in client.models.list().data} == {"a", "b", "e"}


def test_bad_requests_get_clear_json_errors(endpoint):
    url, client, _ = endpoint
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["type"] == "not_found_error" and "nope" in err.value.body["message"]
    auth = {"Authorization": f"Bearer {KEY}"}
    missing = httpx.post(url + "/v1/completions", json={"prompt": "x"}, headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["message"] == "model name is missing from the request"
    bad = httpx.post(url + "/v1/completions", content=b"{oops", headers=auth)
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    assert httpx.post(url + "/v1/completions", json={"model": "a", "prompt": "x"}).status_code == 401
    assert httpx.get(url + "/health").json() == {"status": "ok"}  # no key needed, as llama-server


def test_requests_for_a_model_land_on_the_replica_that_holds_it(endpoint):
    _, client, replicas = endpoint
    with ThreadPoolExecutor(4) as pool:  # within a replica's max_ongoing_requests: no overflow to the other
        landed = list(pool.map(lambda i: ("ab"[i % 2], replica_of(client, "ab"[i % 2])), range(16)))
    assert {name: {r for n, r in landed if n == name} for name in "ab"} == {n: {replicas[n]} for n in "ab"}


def test_resources_are_the_engines_estimate_and_ray_reserves_them(endpoint, models):
    specs = model_specs(models, PARAMS)
    estimates = {name: estimate_spec(spec) for name, spec in specs.items()}
    with llamahost.Pool(idle_ttl=None) as pool:  # what a pool's budget counts for the same model
        spec = specs["a"]
        handle = pool.get(spec["model"], args=spec["args"], **spec["params"]).load()
        assert handle.stats()["memory_bytes"] == estimates["a"].worst_case_bytes
    needs = replica_resources(list(estimates.values()), 2)
    two_largest = sorted(e.worst_case_bytes for e in estimates.values())[-2:]
    assert needs == {"memory": sum(two_largest), "num_gpus": 0, "budget": sum(two_largest)}  # a CPU-only machine
    reserved = ray.cluster_resources()["memory"] - ray.available_resources()["memory"]
    assert reserved == 2 * needs["memory"]  # two replicas; the ingress reserves none


def test_gpu_shares_pack_small_models_and_take_split_ones_whole():
    gib = 1 << 30

    def device(name: str, used: int, total: int = 24 * gib) -> DeviceEstimate:
        return DeviceEstimate(name, weights=used, kv_cache=0, compute=0, free=total, total=total, layers=1)

    host = device("CPU", 100 << 20, 64 * gib)
    small = Estimate("small.gguf", 4096, 24, 25, (1.0,), (device("CUDA0", 3 * gib), replace(host, prompt_cache=gib)))
    split = Estimate("big.gguf", 4096, 80, 81, (1.0, 1.0), (device("CUDA0", 20 * gib), device("CUDA1", 20 * gib), host))
    assert replica_resources([small], 1) == {"memory": (100 << 20) + gib, "num_gpus": 0.125,
                                             "budget": 3 * gib + (100 << 20) + gib}
    assert replica_resources([small, small], 2)["num_gpus"] == 0.25  # eight such replicas on one GPU
    assert replica_resources([small, split], 1)["num_gpus"] == 2
    assert replica_resources([small, split], 2)["num_gpus"] == 3  # more than one GPU: whole ones
    with pytest.raises(ValueError, match="models_per_replica"):
        build({"a": "a.gguf"}, models_per_replica=0)
    with pytest.raises(ValueError, match="model 'a'"):
        model_specs({"a": {"n_ctx": 512}})


def slots(url: str, model: str) -> list[dict]:
    """The slots of the server of ``model`` (on the replica holding it)."""
    return httpx.get(url + "/slots", params={"model": model}, headers={"Authorization": f"Bearer {KEY}"},
                     timeout=30).json()


def test_a_client_that_leaves_a_stream_stops_its_generation(endpoint):
    url, _, _ = endpoint
    body = {"model": "a", "prompt": "Go on:", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as answer:
        assert answer.status_code == 200
        chunks = answer.iter_bytes()
        for _ in range(3):
            next(chunks)
    poll(lambda: not any(s["is_processing"] for s in slots(url, "a")), 30, "the generation to stop")
    held = [s["n_prompt_tokens"] for s in slots(url, "a") if s.get("id_task") is not None]  # prompt and answer
    assert held and max(held) < 2000  # 4000 tokens uncancelled: about 10 s


def test_a_replica_killed_under_load(endpoint):
    url, client, replicas = endpoint
    victim = ray.get_actor(replicas["a"], namespace="serve")
    long = {"model": "a", "prompt": "Go on:", "max_tokens": 4000, "extra_body": {"ignore_eos": True}}

    def other_model(i: int) -> None:  # b's replica lives on: every answer comes
        for j in range(5):
            out = client.completions.create(model="b", prompt=f"Story {i}.{j}:", max_tokens=100,
                                            extra_body={"ignore_eos": True})
            assert out.model == "b" and out.usage.completion_tokens == 100

    with ThreadPoolExecutor(4) as clients:
        cut = clients.submit(lambda: list(client.completions.create(stream=True, **long)))
        lost = clients.submit(client.completions.create, **long)
        others = [clients.submit(other_model, i) for i in range(2)]
        poll(lambda: all(s["is_processing"] for s in slots(url, "a")), 30, "both long answers under way")
        ray.kill(victim)
        with pytest.raises(openai.APIError, match="unavailable"):  # the stream's last event: the error
            cut.result()
        with pytest.raises(openai.APIStatusError) as err:
            lost.result()
        assert err.value.status_code == 503 and err.value.body["type"] == "unavailable_error"
        for done in others:
            done.result()
    for name in "ab" * 3:  # the next ones succeed, on a replica that is alive: no model lost
        assert client.completions.create(model=name, prompt="Hi", max_tokens=2).model == name
    poll(lambda: gone(replicas["a"]) and running_replicas() == 2, 60, "Ray to replace the killed replica")


def test_serve_run_the_builder_then_scale_up_under_load_and_back_down(cluster, models):
    """It replaces the application with one made by Ray's own ``serve run``, autoscaled."""
    nodes, url = cluster
    scaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0,
               "downscale_delay_s": 2, "look_back_period_s": 2, "metrics_interval_s": 0.5}
    with pytest.raises(ValueError, match="NAME=MODEL"):
        app(AppArgs(models="a.gguf"))
    command = [os.path.join(os.path.dirname(sys.executable), "serve"), "run", "--address", nodes.address,
               "--non-blocking", "--name", "llm", "--route-prefix", "/", "llamahost.serving.ray_serve:app",
               f"models=a={models['a']}", f"models_dir={os.path.dirname(models['b'])}",  # b is tiny-1
               "args=-c 8192 -np 2 -t 1", "models_per_replica=2",
               f"autoscaling_config={json.dumps(scaling)}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    assert {m.id for m in client.models.list().data} == {"a", "tiny-1", "tiny-2"}
    assert client.completions.create(model="tiny-1", prompt="Hi", max_tokens=2).model == "tiny-1"  # no key given
    poll(lambda: running_replicas() == 1, 60, "one replica with no load")

    stop = threading.Event()

    def load(i: int) -> None:
        for j in range(40):  # bounded in requests, and stopped once scaled up
            if stop.is_set():
                return
            chunks = list(client.completions.create(model=("a", "tiny-1")[i % 2], prompt=f"Story {i}.{j}:",
                                                    max_tokens=300, extra_body={"ignore_eos": True}, stream=True))
            assert chunks[-1].choices[0].finish_reason == "length"

    with ThreadPoolExecutor(4) as clients:
        loads = [clients.submit(load, i) for i in range(4)]
        try:
            poll(lambda: running_replicas() == 2, 90, "a second replica under load")
        finally:
            stop.set()
        for done in loads:
            done.result()
    poll(lambda: running_replicas() == 1, 60, "back to one replica once the load ended")


def test_rpc_workers_are_scheduled_with_their_replica_as_one_placement_group(cluster, models):
    """Last: the model split over two RPC workers that the replica starts in its placement group's
    other bundles answers as a local load does."""
    _, url = cluster
    serve.delete("llm")  # its CPUs
    split = {"n_ctx": 1024, "parallel": 1, "threads": 1, "n_gpu_layers": 3, "tensor_split": [1, 1], "no_repack": True}
    with llamahost.Server(models["a"], **split) as local:
        expected = local.request("POST", "/completion", {"prompt": "Hi there", "n_predict": 16,
                                                          "temperature": 0}).json()["content"]
    serve.run(build({"a": models["a"]}, params=split, num_cpus=0.5, rpc_workers=2,
                    rpc_worker_resources={"CPU": 0.25}), name="split", route_prefix="/split")
    client = openai.OpenAI(base_url=url + "/split/v1", api_key="unused", max_retries=0, timeout=120)
    answer = client.completions.with_raw_response.create(model="a", prompt="Hi there", max_tokens=16, temperature=0)
    assert answer.parse().choices[0].text == expected
    groups = [g for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]
    assert len(groups) == 1 and groups[0]["strategy"] == "SPREAD"
    bundles = list(groups[0]["bundles"].values())  # the replica's, then a worker's each, memory from the estimate
    assert [b["CPU"] for b in bundles] == [0.5, 0.25, 0.25] and all(b["memory"] > 0 for b in bundles)
    replica = answer.headers[REPLICA_HEADER]
    for i in (1, 2):  # each worker on the node of its bundle
        worker = ray.get_actor(f"{replica}:rpc{i - 1}", namespace="serve")
        assert ray.get(worker.node.remote()) == groups[0]["bundles_to_node_id"][i]
    serve.delete("split")
