"""A few hundred mutated GGUF files through inspect, estimate and Server, each case in a
worker process under an address-space limit and a timeout (tests/fuzz_gguf.py; the nightly
run is ``python tests/fuzz_gguf.py --cases 10000``): no crash, no hang, no allocation past
the limit, and every rejection one of llamahost's own exceptions."""

from __future__ import annotations

import os

import pytest

import fuzz_gguf
from conftest import FUZZ_SEED

CASES = int(os.environ.get("LLAMAHOST_FUZZ_CASES", "300"))


@pytest.mark.parametrize("seed, cases", [(20261123, CASES), (FUZZ_SEED, CASES // 2)], ids=["fixed_seed", "random_seed"])
def test_mutated_models_are_rejected_cleanly(tmp_path, seed, cases):
    report = fuzz_gguf.run(cases, seed=seed, workers=2, timeout=60, workdir=tmp_path, save=tmp_path / "findings")
    assert report.cases == cases
    assert report.findings == [], f"seed {seed} (--seed {seed} --only N repeats case N):\n" + report.summary()
    if seed == 20261123:  # the mutations reach every stage: rejected by the header checks, by the engine, and loaded
        server = report.counts["server"]
        assert report.counts["inspect"]["InvalidModelError"] > 0 and server["ModelLoadError"] > 0 and server["ok"] > 0
