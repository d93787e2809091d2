import time, httpx, llamahost
from llamahost import Router
from test_models import gguf_files, home, hub  # noqa

def test_x(hub, home):
    with llamahost.Pool(idle_ttl=None) as pool, Router(pool, {}, port=0, presets_path=home / "presets.ini") as router:
        t=time.time()
        r = httpx.get(router.url + "/api/hub/search", params={"q":"tiny"}, timeout=300)
        print(r.status_code, r.text[:300], time.time()-t)
        t=time.time()
        r = httpx.get(router.url + "/api/hub/files", params={"repo": "test-org/tiny-GGUF", "n_ctx": 4096, "parallel": 1}, timeout=300)
        print(r.status_code, r.text[:3000], time.time()-t)
