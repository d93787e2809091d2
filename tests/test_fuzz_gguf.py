"""A few hundred mutated GGUF files through inspect, estimate and Server, each case in a
worker process under an address-space limit and a timeout (tests/fuzz_gguf.py; the nightly
run is ``python tests/fuzz_gguf.py --cases 10000``): no crash, no hang, no allocation past
the limit, and every rejection one of llamahost's own exceptions."""

from __future__ import annotations

import os

import fuzz_gguf

CASES = int(os.environ.get("LLAMAHOST_FUZZ_CASES", "300"))


def test_mutated_models_are_rejected_cleanly(tmp_path):
    report = fuzz_gguf.run(CASES, seed=20261123, workers=2, timeout=60, workdir=tmp_path, save=tmp_path / "findings")
    assert report.cases == CASES
    assert report.findings == [], report.summary()
    # the mutations reach every stage: rejected by the header checks, by the engine, and loaded
    server = report.counts["server"]
    assert report.counts["inspect"]["InvalidModelError"] > 0 and server["ModelLoadError"] > 0 and server["ok"] > 0
