from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# A runner may start the tests with SIGINT ignored (a shell's background job does); the tests that
# press Ctrl-C need Python's own handler, in this process and in the processes they start.
signal.signal(signal.SIGINT, signal.default_int_handler)

import llamahost  # noqa: E402
from llamahost.models.demo import demo_model_path  # noqa: E402

import synthetic  # noqa: E402

# The fuzz tests run their fixed seeds, and once more from this seed, new each run
FUZZ_SEED = int(os.environ.get("LLAMAHOST_FUZZ_SEED") or random.SystemRandom().randrange(1 << 31))


def pytest_report_header(config) -> str:
    return f"fuzz tests: their fixed seeds, and random seed {FUZZ_SEED} (LLAMAHOST_FUZZ_SEED={FUZZ_SEED} repeats it)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "random_seed" in item.name:
        report.sections.append(("fuzz seed", f"this run's random seed: LLAMAHOST_FUZZ_SEED={FUZZ_SEED} repeats it"))


@pytest.fixture(scope="session")
def demo_model() -> Path:
    return demo_model_path()


@pytest.fixture(scope="session")
def server(demo_model):
    """The demo model, shared by the tests that only read from it."""
    with llamahost.Server(demo_model, n_ctx=4096, parallel=4, seed=42, threads=2) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer llama with random weights and Qwen3's chat template (tools-capable)."""
    template = (synthetic.TEMPLATE_DIR / "Qwen-Qwen3-0.6B.jinja").read_text()
    return synthetic.write_llama(tmp_path_factory.mktemp("models") / "tiny-llama.gguf", chat_template=template)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_model) -> list[Path]:
    """Three small llama models of the same shape (the pool and router tests' models)."""
    folder = tmp_path_factory.mktemp("pool-models")
    return [tiny_model] + [synthetic.write_llama(folder / f"tiny-{n}.gguf", seed=n) for n in (1, 2)]


@pytest.fixture(scope="session")
def arch_models(tmp_path_factory, demo_model, tiny_model) -> dict[str, tuple[Path, dict]]:
    """One model per architecture, with the parameters it loads with."""
    folder = tmp_path_factory.mktemp("archs")
    return {
        "gemma3-swa (demo)": (demo_model, {}),
        "llama-gqa": (tiny_model, {}),
        "qwen3": (synthetic.write_model(folder / "qwen3.gguf", "qwen3"), {}),
        "qwen3moe": (synthetic.write_model(folder / "qwen3moe.gguf", "qwen3moe"), {}),
        "bert-embedding": (synthetic.write_model(folder / "bert.gguf", "bert", n_ctx_train=512),
                           {"embedding": True, "pooling": "mean"}),
    }
