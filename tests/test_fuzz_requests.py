"""Fuzzed requests: every HTTP route and every Python entry point, with schema-aware bodies
(the fields the routes read, filled with wrong types, missing, huge, negative, deeply nested,
invalid UTF-8, bad grammars, JSON schemas and tools). HTTP answers are JSON, errors 4xx (501
only for a feature the server was started without); Python calls return or raise
llamahost's errors, ValueError or TypeError; the server keeps serving. Loopback only.

``LLAMAHOST_FUZZ_EXAMPLES`` sets the examples per test (default 200).
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import llamahost
from conftest import FUZZ_SEED
from llamahost import Router

EXAMPLES = int(os.environ.get("LLAMAHOST_FUZZ_EXAMPLES", "200"))
FIXED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                        HealthCheck.data_too_large])
RANDOM = settings(FIXED, max_examples=EXAMPLES // 2, derandomize=False)


def fuzzed(*strategies, **named_strategies):
    """A test twice: ``test_x`` on Hypothesis' fixed examples, and ``test_x_random_seed`` on
    examples drawn from this run's random seed (conftest.FUZZ_SEED, printed when it fails)."""
    def both(body):
        fixed = FIXED(given(*strategies, **named_strategies)(body))
        drawn = seed(FUZZ_SEED)(RANDOM(given(*strategies, **named_strategies)(body)))
        return fixed, drawn
    return both

leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
        | st.text(max_size=24) | st.sampled_from(["", "\x00", "\ud800", "é" * 50]))
any_json = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                             max_size=4), max_leaves=10)
edges = st.sampled_from([-(2**63), -(2**31), -2, -1, 0, 1, 2, 2**31 - 1, 2**31, 2**32 + 3, 2**40, 2**63, 2**64 + 1])
counts = edges | st.integers(-(2**70), 2**70) | st.integers(0, 8) | st.floats() | any_json
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | any_json},
    optional={"content": st.text(max_size=40) | any_json, "tool_calls": any_json, "name": any_json})
grammars = st.sampled_from(['root ::= "a"', "root ::= (", "root ::= root", 'x ::= "a"', "", "root ::= [^",
                            'root ::= "a"{100000000}', 'root ::= "\\x"']) | st.text(max_size=30)
schemas = st.sampled_from([{"type": "object"}, {"type": "bogus"}, {"$ref": "#/nope"}, {"$ref": "#"},
                           {"type": "string", "pattern": "(("}, {"enum": []}, {"type": "array", "minItems": 10**9},
                           {"type": "integer", "minimum": 10, "maximum": 1}]) | any_json
tools = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "retrieval"]) | any_json},
    optional={"function": st.fixed_dictionaries({}, optional={"name": st.text(max_size=8) | any_json,
                                                              "description": any_json, "parameters": schemas})}) | any_json
FIELDS = {
    "messages": st.lists(message, max_size=3) | any_json,
    "prompt": st.text(max_size=40) | st.lists(st.integers(-5, 40000) | st.text(max_size=5), max_size=4) | any_json,
    "max_tokens": counts, "n_predict": counts, "n_probs": counts, "top_logprobs": counts,
    "logprobs": st.booleans() | counts, "n": counts, "n_keep": counts, "seed": counts, "top_k": counts,
    "temperature": st.floats() | any_json, "top_p": st.floats() | any_json, "min_p": st.floats() | any_json,
    "stream": st.booleans() | any_json, "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | any_json,
    "grammar": grammars, "json_schema": schemas, "tools": st.lists(tools, max_size=2) | any_json,
    "response_format": st.fixed_dictionaries({"type": st.sampled_from(["json_object", "json_schema", "text"]) | any_json},
                                             optional={"schema": schemas,
                                                       "json_schema": st.fixed_dictionaries({"schema": schemas})}),
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | any_json, "logit_bias": any_json,
    "content": st.text(max_size=40) | any_json, "tokens": st.lists(st.integers(-(2**40), 2**40), max_size=4) | any_json,
    "input": st.text(max_size=20) | any_json, "query": any_json, "documents": any_json,
    "filename": st.sampled_from(["../x.bin", "/etc/passwd", "a/b", "..", "ok.bin", "", "x" * 300]) | any_json,
    "input_prefix": any_json, "input_suffix": any_json, "add_special": any_json, "with_pieces": any_json,
}
bodies = st.fixed_dictionaries({}, optional=FIELDS) | any_json
# bodies that are not JSON, or JSON no parser should have to take whole
raw_bodies = st.sampled_from([
    b"", b"{", b"\xff\xfe\xfd", b'{"prompt": "\xc3\x28"}', b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
    b'{"prompt": "a", "max_tokens": 1e999}', b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"prompt": "' + b"x" * 2_000_000 + b'", "max_tokens": 1}', b"null", b"123", b'"text"',
])


@pytest.fixture(scope="module")
def target(tiny_model, tmp_path_factory):
    """The tiny model with every optional route enabled; slots saved to a folder of its own."""
    with llamahost.Server(tiny_model, n_ctx=256, parallel=2, slot_save_path=tmp_path_factory.mktemp("slots"),
                          metrics=True, props=True, slots=True) as srv:
        routes = srv.routes() + ["/slots/0", "/slots/1", "/slots/-3", "/slots/x", "/no/such/route"]
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            yield srv, routes, http


def route_strategy(routes):
    queries = st.sampled_from(["", "?action=save", "?action=restore", "?action=erase", "?action=x", "?model=%ff",
                               "?" + "a=1&" * 1000])
    return st.tuples(st.sampled_from(["GET", "POST", "DELETE"]), st.sampled_from(routes), queries)


def encoded(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode("utf-8", "surrogatepass")


def assert_answered(status: int, content_type: str, data: bytes) -> None:
    assert status < 500 or status == 501, (status, data[:300])
    if status >= 400:
        error = json.loads(data)["error"]
        assert error["message"] and error.get("code", status) == status, error
        if status == 501:
            assert error["type"] == "not_supported_error", error
    elif "json" in content_type:
        json.loads(data)


def still_serving(srv) -> None:
    assert srv.health()["status"] == "ok"
    assert srv.complete("Hello", max_tokens=2)["choices"][0]["text"] is not None


def _every_http_route(target, data):
    srv, routes, http = target
    method, path, query = data.draw(route_strategy(routes))
    body = encoded(data.draw(bodies | raw_bodies))
    r = http.request(method, path + query, content=body or None, headers={"Content-Type": "application/json"})
    assert_answered(r.status_code, r.headers.get("content-type", ""), r.content)


test_every_http_route, test_every_http_route_random_seed = fuzzed(data=st.data())(
    _every_http_route)


def _every_route_called_directly(target, data):
    srv, routes, _ = target
    method, path, query = data.draw(route_strategy(routes))
    response = srv.request(method, path + query, encoded(data.draw(bodies | raw_bodies)))
    assert_answered(response.status, response.content_type, response.body)


test_every_route_called_directly, test_every_route_called_directly_random_seed = fuzzed(data=st.data())(
    _every_route_called_directly)


@pytest.fixture(scope="module")
def routed(tiny_model):
    """The same model behind the router (thread isolation), named "m"."""
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_model, n_ctx=256, parallel=2)
        with Router(pool, {"m": handle}, port=0) as router, httpx.Client(base_url=router.url, timeout=120) as http:
            yield http, handle


def _every_route_through_the_router(target, routed, data):
    _, routes, _ = target
    http, handle = routed
    method, path, query = data.draw(route_strategy(routes))
    body = data.draw(bodies | raw_bodies)
    model = data.draw(st.sampled_from(["m", "other", "../m", ""]) | any_json)
    if isinstance(body, dict):
        body = dict(body, model=model)
    r = http.request(method, path + query + ("&" if "?" in query else "?") + "model=m", content=encoded(body) or None,
                     headers={"Content-Type": "application/json"})
    assert_answered(r.status_code, r.headers.get("content-type", ""), r.content)
    assert handle.stats()["in_flight"] == 0


test_every_route_through_the_router, test_every_route_through_the_router_random_seed = fuzzed(data=st.data())(
    _every_route_through_the_router)


ENTRY_POINTS = {
    "chat": lambda srv, arg, opts: srv.chat(arg, **opts),
    "chat stream": lambda srv, arg, opts: list(srv.chat(arg, stream=True, **opts)),
    "complete": lambda srv, arg, opts: srv.complete(arg, **opts),
    "complete stream": lambda srv, arg, opts: list(srv.complete(arg, stream=True, **opts)),
    "tokenize": lambda srv, arg, opts: srv.tokenize(arg),
    "detokenize": lambda srv, arg, opts: srv.detokenize(arg),
    "count_tokens": lambda srv, arg, opts: srv.count_tokens(arg, **opts),
    "embed": lambda srv, arg, opts: srv.embed(arg, **opts),
    "rerank": lambda srv, arg, opts: srv.rerank(arg, arg, **opts),
    "request": lambda srv, arg, opts: srv.request("POST", "/v1/chat/completions", opts),
}
options = st.fixed_dictionaries({}, optional={k: v for k, v in FIELDS.items() if k not in ("messages", "prompt", "stream")})


def _every_python_entry_point(target, name, arg, opts):
    srv, _, _ = target
    try:
        answer = ENTRY_POINTS[name](srv, arg, opts)
    except llamahost.APIError as exc:  # an error status: a client error, as over HTTP
        assert exc.status < 500 or exc.status == 501, (name, exc.status, exc.error)
    except json.JSONDecodeError as exc:  # a body that is not JSON is our bug, not the caller's
        raise AssertionError(f"{name}: an answer that is not JSON: {exc}") from exc
    except (llamahost.LlamahostError, ValueError, TypeError):
        pass  # refused before the server: a wrong argument, named
    else:
        if name == "request":
            assert_answered(answer.status, answer.content_type, answer.body)


test_every_python_entry_point, test_every_python_entry_point_random_seed = fuzzed(
    name=st.sampled_from(sorted(ENTRY_POINTS)), arg=FIELDS["messages"] | FIELDS["prompt"] | any_json, opts=options)(
    _every_python_entry_point)


def test_the_server_still_serves_after_the_fuzzing(target, routed):
    srv, _, http = target
    still_serving(srv)
    assert http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
    router, _ = routed
    assert router.post("/v1/completions", json={"model": "m", "prompt": "Hi", "max_tokens": 2}).status_code == 200


MESSAGES = [{"role": "user", "content": "Hi"}]
INVALID = {
    "not JSON": b"{oops",
    "invalid UTF-8": b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "a lone surrogate": b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    "nested 100,000 deep": b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "messages missing": {"max_tokens": 2},
    "messages of the wrong type": {"messages": 5},
    "content of the wrong type": {"messages": [{"role": "user", "content": 5}]},
    "max_tokens negative": {"messages": MESSAGES, "max_tokens": -5},
    "max_tokens enormous": {"messages": MESSAGES, "max_tokens": 2**40},
    "max_tokens just past int32": {"messages": MESSAGES, "max_tokens": 2**32 + 3},
    "max_tokens a string": {"messages": MESSAGES, "max_tokens": "many"},
    "n_probs negative": {"messages": MESSAGES, "max_tokens": 2, "n_probs": -5},
    "n_probs enormous": {"messages": MESSAGES, "max_tokens": 2, "n_probs": 10**9},
    "top_logprobs enormous": {"messages": MESSAGES, "max_tokens": 2, "logprobs": True, "top_logprobs": 10**6},
    "a grammar that does not parse": {"messages": MESSAGES, "grammar": "root ::= ("},
    "a JSON schema with a dangling $ref": {"messages": MESSAGES, "json_schema": {"$ref": "#/nope"}},
    "a JSON schema of an unknown type": {"messages": MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "bogus"}}}},
    "a tool without its function": {"messages": MESSAGES, "tools": [{"type": "function"}]},
    "a tool function without a name": {"messages": MESSAGES, "tools": [{"type": "function", "function": {}}]},
    "tools not a list": {"messages": MESSAGES, "tools": "get_weather"},
}
INVALID_ELSEWHERE = [
    ("/v1/completions", {"prompt": "a", "max_tokens": 2**40}),
    ("/v1/completions", {"prompt": "a", "max_tokens": 2, "n_probs": 10**9}),
    ("/completion", {"prompt": [], "n_predict": 2}),
    ("/tokenize", {"content": 5}),
    ("/detokenize", {"tokens": [-1]}),
    ("/detokenize", {"tokens": [10**9]}),
    ("/v1/messages", {"model": "x", "max_tokens": 2, "messages": 5}),
    ("/v1/responses", {"input": 5}),
    ("/slots/0?action=save", {}),
    ("/slots/0?action=save", {"filename": 5}),
]


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_invalid_chat_requests_get_4xx_json(target, body):
    srv, _, http = target
    r = http.post("/v1/chat/completions", content=encoded(body), headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"]["message"]
    direct = srv.request("POST", "/v1/chat/completions", encoded(body))
    assert (direct.status, direct.json()["error"]["type"]) == (r.status_code, r.json()["error"]["type"])


@pytest.mark.parametrize("path, body", INVALID_ELSEWHERE, ids=[f"{p} {json.dumps(b)[:40]}" for p, b in INVALID_ELSEWHERE])
def test_invalid_requests_to_other_routes_get_4xx_json(target, path, body):
    _, _, http = target
    r = http.post(path, json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"]["message"]
