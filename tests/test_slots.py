"""Conversations survive an unload (serving/slots.py): the pool saves its slots when it unloads
a model and restores them when it loads it again, so the next turn reuses the cache; another
model or other cache types never restore the files; a damaged file is ignored with a warning."""

from __future__ import annotations

import logging

import pytest

import llamahost
from test_models import home  # noqa: F401 - an empty llamahost home

STORY = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog near the river bank." for i in range(60))


def turn(handle, prompt: str) -> dict:
    return handle.request("POST", "/completion", {"prompt": prompt, "n_predict": 2, "temperature": 0,
                                                  "cache_prompt": True}).json()


def next_turn_after_an_unload(pool, model, **params) -> dict:
    handle = pool.get(model, n_ctx=2048, parallel=1, **params)
    first = turn(handle, STORY)
    assert first["timings"]["prompt_n"] > 500
    handle.unload()
    return turn(handle, STORY + " And then?")


# the demo model (gemma 3) attends through a sliding window: its cache is reused only from a context
# checkpoint, which the slot's file must carry (patches/0011)
@pytest.mark.parametrize("model", ["tiny_model", "demo_model"])
def test_the_next_turn_reuses_the_cache_saved_at_the_unload(model, home, request):  # noqa: F811
    model = request.getfixturevalue(model)
    with llamahost.Pool(idle_ttl=None) as pool:
        resumed = next_turn_after_an_unload(pool, model)
        assert len(list((home / "slots").glob("*/slot-0.bin"))) == 1
    with llamahost.Pool(idle_ttl=None, slot_cache=0) as pool:
        again = next_turn_after_an_unload(pool, model)
    assert resumed["timings"]["cache_n"] > 500 and again["timings"]["cache_n"] == 0
    assert resumed["timings"]["prompt_n"] + resumed["timings"]["cache_n"] == again["timings"]["prompt_n"]
    assert resumed["content"] == again["content"]


def test_another_model_or_other_cache_types_never_restore_them(tiny_models, home):  # noqa: F811
    with llamahost.Pool(idle_ttl=None) as pool:
        next_turn_after_an_unload(pool, tiny_models[0])
        for model, params in ((tiny_models[1], {}), (tiny_models[0], {"cache_type_k": "q8_0"})):
            handle = pool.get(model, n_ctx=2048, parallel=1, **params)
            assert turn(handle, STORY + " And then?")["timings"]["cache_n"] == 0
    assert len(list((home / "slots").glob("*/slot-*.bin"))) == 1  # the first model's, with f16 cache


def test_a_damaged_file_is_ignored_with_a_warning(tiny_model, home, caplog):  # noqa: F811
    with llamahost.Pool(idle_ttl=None) as pool:
        handle = pool.get(tiny_model, n_ctx=2048, parallel=1)
        turn(handle, STORY)
        handle.unload()
        [saved] = (home / "slots").glob("*/slot-0.bin")
        saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 3])
        with caplog.at_level(logging.WARNING, logger="llamahost.pool"):
            resumed = turn(handle, STORY + " And then?")
        assert resumed["timings"]["cache_n"] == 0 and not saved.exists()
        assert "not restored" in caplog.text


def test_the_saved_conversations_stay_within_their_bound(tiny_model, home):  # noqa: F811
    with llamahost.Pool(idle_ttl=None, slot_cache=1) as pool:  # a byte: nothing stays
        next_turn_after_an_unload(pool, tiny_model)
    assert not list((home / "slots").glob("*/slot-*.bin"))


@pytest.mark.parametrize("model", ["tiny_model", "demo_model"])
def test_the_engine_refuses_a_damaged_file_itself(model, tmp_path, request):
    """patches/0009 and 0010: upstream asserted on a short slot file (the end of the process); 0011:
    the demo model's file ends with its context checkpoints, which are checked as strictly."""
    with llamahost.Server(request.getfixturevalue(model), n_ctx=2048, slot_save_path=str(tmp_path)) as srv:
        srv.request("POST", "/completion", {"prompt": STORY, "n_predict": 1})
        assert srv.request("POST", "/slots/0?action=save", {"filename": "whole.bin"}).status == 200
        data = (tmp_path / "whole.bin").read_bytes()
        for cut in (20, len(data) // 3, len(data) - 7):
            (tmp_path / "damaged.bin").write_bytes(data[:cut])
            answer = srv.request("POST", "/slots/0?action=restore", {"filename": "damaged.bin"})
            assert answer.status == 400 and "Unable to restore slot" in answer.json()["error"]["message"], cut
        assert srv.request("POST", "/slots/0?action=restore", {"filename": "whole.bin"}).status == 200
