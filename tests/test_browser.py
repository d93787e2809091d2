"""llama.cpp's web UI in a real browser (Debian's Chromium, driven by Playwright; no browser
download): on ``llamahost serve`` a message typed into the page gets a streamed answer from the
demo model, and on the router the model picker lists the models, loads one, chats with it and
unloads it. The pages show no console error that upstream's llama-server does not show too.
Screenshots go to docs/ui/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

import llamahost
from llamahost import Router
from llamahost.bench.peers import llama_server, llamahost_serve
from test_models import gguf_files, home, hub  # noqa: F401 - the Hub fixtures

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the machine's notes say: no sandbox as root, and none of the background calls a closed network refuses
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "ui"
ASSISTANT = '[aria-label="Assistant message with actions"]'


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (apt-get install chromium): .ci/run installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str) -> tuple[Page, list[str]]:
    """A page at ``url``, once its message box shows, and the console errors it logs."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("response", lambda r: errors.append(f"{r.status} {httpx.URL(r.url).path}") if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    page.locator("textarea").wait_for(timeout=60_000)
    return page, errors


def send_and_watch_the_answer(page: Page, text: str) -> list[int]:
    """Type ``text``, send it, and follow the assistant's message as it grows: its lengths seen."""
    page.locator("textarea").fill(text)
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions"), timeout=120_000) as answer:
        page.get_by_role("button", name="Send").click()
    assert answer.value.status == 200 and "text/event-stream" in answer.value.headers["content-type"]
    lengths: list[int] = []
    deadline = time.monotonic() + 120
    assistant = page.locator(ASSISTANT).last
    while time.monotonic() < deadline:
        length = len(assistant.inner_text()) if assistant.count() else 0
        if not lengths or length != lengths[-1]:
            lengths.append(length)
        if page.get_by_role("button", name="Send").count():  # the Stop button is gone: the answer is whole
            break
        time.sleep(0.05)
    return lengths


def console_errors_of(page_errors: list[str]) -> set[str]:
    return {e for e in page_errors if not e.startswith("Failed to load resource")}  # those come as statuses too


def test_a_message_gets_a_streamed_answer_from_the_demo_model(browser, demo_model):
    flags = [str(demo_model), "-c", "2048", "-np", "1", "-lv", "1", "--temp", "0", "-n", "48"]
    with llamahost_serve(flags) as ours, llama_server(["-m", *flags]) as upstream:
        page, errors = open_page(browser, ours.url)
        lengths = send_and_watch_the_answer(page, "Write one sentence about the sea.")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "chat.png")
        their_page, their_errors = open_page(browser, upstream.url)
        time.sleep(1)
        their_page.close()
        page.close()
    assert lengths[-1] > 0 and len([n for n in lengths if n > 0]) >= 2, lengths  # it grew: streamed
    assert console_errors_of(errors) <= console_errors_of(their_errors) | {"403 /tools"}, (errors, their_errors)
    assert not [e for e in errors if e.startswith("uncaught")]


def test_the_model_picker_loads_chats_with_and_unloads_a_model(browser, tiny_models, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for i, path in enumerate(tiny_models[:2]):
        shutil.copy(path, folder / f"tiny-{i}.gguf")
    with llamahost_serve(["--models-dir", str(folder), "-c", "512", "-np", "1", "-lv", "1", "-n", "16"]) as router:
        page, errors = open_page(browser, router.url)
        page.locator("button", has_text="tiny-0").click()
        options = page.get_by_role("option")
        options.first.wait_for()
        assert {o.inner_text().strip() for o in options.all()} >= {"tiny-0", "tiny-1"}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "router-picker.png")

        option = options.filter(has_text="tiny-1")
        option.hover()
        option.get_by_role("button", name="Load model").click()
        wait_for_status(router.url, "tiny-1", "loaded")
        option.click()  # chat with it
        lengths = send_and_watch_the_answer(page, "Hello")
        assert lengths[-1] > 0
        page.screenshot(path=SCREENSHOTS / "router-chat.png")

        page.locator("button", has_text="tiny-1").first.click()
        option = page.get_by_role("option").filter(has_text="tiny-1")
        option.hover()
        option.get_by_role("button", name="Unload model").click()
        wait_for_status(router.url, "tiny-1", "unloaded")
        page.close()
    assert console_errors_of(errors) <= {"403 /tools"}, errors


def wait_for_status(url: str, model: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = {m["id"]: m["status"]["value"] for m in httpx.get(url + "/v1/models").json()["data"]}
        if models.get(model) == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{model} did not become {status}: {models}")


def test_the_dashboard_from_a_search_to_a_chat_and_back(browser, hub, home):  # noqa: F811 - the Hub fixtures
    """Search the (local) Hub, see each quantization's verdict, pull one with progress, accept the
    proposed configuration and load it, see its memory on the device bars, chat with it, unload it
    and remove it."""
    with llamahost.Pool(idle_ttl=None) as pool, Router(pool, {}, port=0, presets_path=home / "presets.ini") as router:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors, dialogs = [], []
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        page.on("dialog", lambda dialog: (dialogs.append(f"{dialog.type}: {dialog.message}"), dialog.accept()))
        page.goto(router.url + "/dashboard")
        page.locator("#devices .device").first.wait_for()

        page.locator("#search").fill("tiny")
        page.locator("#search-form button").click()
        page.locator("#results li", has_text="test-org/tiny-GGUF").click()
        rows = page.locator("#quants tr[data-quant]")
        rows.nth(3).wait_for()
        shown = {row.get_attribute("data-quant"): row.locator(".badge").get_attribute("class") for row in rows.all()}
        expected = httpx.get(router.url + "/api/hub/files", params={"repo": "test-org/tiny-GGUF", "n_ctx": 4096,
                                                                    "parallel": 1}).json()["quantizations"]
        assert shown == {q["name"]: f"badge {q['where']}" for q in expected}
        assert shown["test-org/tiny-GGUF:UD-Q8_K_XL"] == "badge none" and "badge none" not in {
            shown[f"test-org/tiny-GGUF:{t}"] for t in ("Q4_0", "Q8_0", "F16")}
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "dashboard-fits.png", full_page=True)

        page.locator("#search").fill("chat")
        page.locator("#search-form button").click()
        page.locator("#results li", has_text="test-org/chat-GGUF").click()
        page.locator('#quants tr[data-quant="test-org/chat-GGUF:F32"]').wait_for()
        hub.stall_after = 12 << 20  # one progress report past huggingface_hub's first 10 MiB chunk, then a stall
        page.locator('#quants tr[data-quant="test-org/chat-GGUF:F32"] button', has_text="Pull").click()
        assert hub.stalled.wait(60)
        pulling = page.locator("[data-pull^=\"test-org/chat-GGUF\"]")
        pulling.filter(has_text=" MiB of ").wait_for()
        assert float(pulling.locator(".progress div").evaluate("bar => parseFloat(bar.style.width)")) > 0
        page.screenshot(path=SCREENSHOTS / "dashboard-pull.png", full_page=True)
        hub.release.set()

        name = "test-org/chat-GGUF:F32"
        page.locator(f'#library tr[data-model="{name}"] button', has_text="Configure & load").click()
        estimate = page.locator("#configure-estimate")
        estimate.filter(has_text="Fits:").wait_for()
        proposed = estimate.inner_text()
        page.locator('#configure-form input[name="n_ctx"]').fill("1024")
        page.wait_for_function("before => document.querySelector('#configure-estimate').innerText !== before",
                               arg=proposed)
        assert "Fits:" in estimate.inner_text()
        page.screenshot(path=SCREENSHOTS / "dashboard-configure.png")
        page.locator("#configure-load").click()
        page.locator(f'#models tr[data-model="{name}"] .badge.loaded').wait_for(timeout=60_000)
        page.locator(f'#devices span[data-model="{name}"]').wait_for()
        assert router.served()[name].request("GET", "/props").json()["default_generation_settings"]["n_ctx"] == 1024
        page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True)

        page.locator(f'#models tr[data-model="{name}"] a', has_text="Chat").click()
        page.locator("textarea").wait_for(timeout=60_000)
        with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as asked:
            assert send_and_watch_the_answer(page, "Hello")[-1] > 0
        assert asked.value.post_data_json["model"] == name

        page.goto(router.url + "/dashboard")
        page.locator(f'#models tr[data-model="{name}"] button', has_text="Unload").click()
        page.locator(f'#models tr[data-model="{name}"] .badge.unloaded').wait_for(timeout=60_000)
        page.locator(f'#library tr[data-model="{name}"] button', has_text="Remove").click()
        page.locator(f'#library tr[data-model="{name}"]').wait_for(state="detached")
        page.close()
        assert name not in router.served() and not list((home / "models").rglob("chat-F32.gguf"))
    assert dialogs == [f"confirm: Delete {name} from the library?"] and not errors, (dialogs, errors)
