"""llama.cpp's web UI at / of every server, with upstream's headers: on a Server over HTTP and
from Python, on the multi-model router; off with ui=False; below --api-prefix; an API key asked
for by its calls as by upstream's."""

from __future__ import annotations

import gzip

import httpx

import llamahost
from llamahost import Router


def check_page(get) -> None:
    """The page and one of its immutable assets, as upstream's HTTP layer serves them."""
    page = get("/", {"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-cache" and b"<html" in page.content.lower()
    assert get("/", {"Accept-Encoding": "gzip", "If-None-Match": page.headers["etag"]}).status_code == 304
    assert get("/", {"Accept-Encoding": "identity"}).status_code == 415  # a gzip build, a client taking none
    asset = next(line.split('"')[1].lstrip("./") for line in page.text.split() if "_app/immutable" in line and '"' in line)
    answer = get("/" + asset, {"Accept-Encoding": "gzip"})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_a_server_serves_the_ui_over_http_and_to_python(tiny_model):
    with llamahost.Server(tiny_model, n_ctx=256) as srv, httpx.Client(base_url=srv.url) as http:
        check_page(lambda path, headers: http.get(path, headers=headers))
        direct = srv.request("GET", "/")  # a browser's request: the gzipped page and its headers
        assert direct.status == 200 and direct.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(direct.body) == http.get("/", headers={"Accept-Encoding": "gzip"}).content
    with llamahost.Server(tiny_model, n_ctx=256, ui=False) as srv:
        assert httpx.get(srv.url + "/").status_code == 404 and srv.request("GET", "/").status == 404
    with llamahost.Server(tiny_model, n_ctx=256, api_prefix="/llm") as srv:
        assert httpx.get(srv.url + "/llm/").status_code == 200 and srv.request("GET", "/llm/").status == 200


def test_the_router_serves_the_ui(tiny_models):
    with llamahost.Pool(idle_ttl=None) as pool:
        with Router(pool, {"m": pool.get(tiny_models[0], n_ctx=256)}, port=0) as router, \
                httpx.Client(base_url=router.url) as http:
            check_page(lambda path, headers: http.get(path, headers=headers))
            assert router.models["m"].state == "unloaded"  # serving the page loads no model
        with Router(pool, {}, port=0, ui=False) as router:
            assert httpx.get(router.url + "/").status_code == 400  # no page: a request that names no model


def test_with_an_api_key_the_ui_calls_need_it(tiny_model, tiny_models):
    with llamahost.Server(tiny_model, n_ctx=256, api_key="k") as srv:
        assert httpx.get(srv.url + "/", headers={"Accept-Encoding": "gzip"}).status_code == 200  # the page itself
        assert httpx.get(srv.url + "/props").status_code == 401
        assert httpx.get(srv.url + "/props", headers={"Authorization": "Bearer k"}).status_code == 200
    with llamahost.Pool(idle_ttl=None) as pool, Router(pool, {"m": pool.get(tiny_models[0], n_ctx=256)}, port=0,
                                                       api_key="k") as router:
        assert httpx.get(router.url + "/props").status_code == 401
        assert httpx.post(router.url + "/models/load", json={"model": "m"}).status_code == 401
        for page in ("/", "/dashboard", "/dashboard/app.js"):  # the pages themselves, which ask for the key
            assert httpx.get(router.url + page).status_code == 200, page
        assert httpx.get(router.url + "/api/devices").status_code == 401
        assert httpx.get(router.url + "/api/devices", headers={"X-Api-Key": "k"}).status_code == 200
        assert httpx.get(router.url + "/props", headers={"Authorization": "Bearer k"}).json()["role"] == "router"
