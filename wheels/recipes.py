"""One recipe per wheel index: the backends it is built for and the libraries the wheel repair
must leave to the user's system. The CUDA indexes differ only in the toolkit that builds them
(installed by the workflow); ggml picks the GPU architectures that toolkit supports. Their wheels
carry the Vulkan module too, so that a machine whose driver is too old for the toolkit (or has
no CUDA runtime) falls back to Vulkan before the CPU.

``python wheels/recipes.py INDEX --github-env`` prints the cibuildwheel settings for the
workflow (.github/workflows/wheels.yml); wheels/build.py uses the same recipes locally;
``--backend`` prints the recipe's backend.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass

# every wheel: backends loaded at run time from the package, every CPU variant, no peers
PORTABLE = {"LLAMAHOST_PORTABLE": "ON", "LLAMAHOST_BUILD_PEERS": "OFF"}

# The driver, CUDA's runtime and cuBLAS come from the user's system (or the nvidia-* pip wheels):
# bundled, they would make a wheel of over 500 MB. Likewise the Vulkan loader.
VULKAN_LIBS, VULKAN_DLLS = ("libvulkan.so.1",), ("vulkan-1.dll",)


def cuda_libs(major: int) -> tuple[str, ...]:
    return ("libcuda.so.1", f"libcudart.so.{major}", f"libcublas.so.{major}", f"libcublasLt.so.{major}")


def cuda_dlls(major: int) -> tuple[str, ...]:
    return ("nvcuda.dll", f"cudart64_{major}.dll", f"cublas64_{major}.dll", f"cublasLt64_{major}.dll")


@dataclass(frozen=True)
class Recipe:
    index: str                            # the index's name: <index-url>/<index>/simple
    backend: str                          # LLAMAHOST_BACKEND: one, or GPU backends in the chain's order ("cuda,vulkan")
    system_libs: tuple[str, ...] = ()     # Linux: left out of the repaired wheel
    system_dlls: tuple[str, ...] = ()     # Windows: likewise

    def definitions(self) -> dict[str, str]:
        return {"LLAMAHOST_BACKEND": self.backend, **PORTABLE}

    def config_settings(self) -> list[str]:
        """pip's / build's --config-settings for scikit-build-core."""
        return [f"cmake.define.{name}={value}" for name, value in self.definitions().items()]

    def auditwheel_args(self) -> list[str]:
        return [arg for lib in self.system_libs for arg in ("--exclude", lib)]

    def delvewheel_args(self) -> list[str]:
        return ["--no-dll", ";".join(self.system_dlls)] if self.system_dlls else []


RECIPES: dict[str, Recipe] = {r.index: r for r in (
    Recipe("cpu", "cpu"),
    Recipe("cu124", "cuda,vulkan", cuda_libs(12) + VULKAN_LIBS, cuda_dlls(12) + VULKAN_DLLS),
    Recipe("cu128", "cuda,vulkan", cuda_libs(12) + VULKAN_LIBS, cuda_dlls(12) + VULKAN_DLLS),
    Recipe("cu130", "cuda,vulkan", cuda_libs(13) + VULKAN_LIBS, cuda_dlls(13) + VULKAN_DLLS),
    Recipe("vulkan", "vulkan", VULKAN_LIBS, VULKAN_DLLS),
    Recipe("metal", "metal"),
)}


def github_env(recipe: Recipe) -> str:
    """Lines for $GITHUB_ENV that make cibuildwheel build and repair this recipe's wheels."""
    settings = " ".join(recipe.config_settings())
    # the index's local version label first (wheels/label.py), then the platform's repair of that wheel
    label = f"python {{project}}/wheels/label.py {{wheel}} {{dest_dir}}/labelled {recipe.index}"
    labelled = "{dest_dir}/labelled/*.whl"
    auditwheel = " ".join([label, "&& auditwheel repair", *recipe.auditwheel_args(), "-w {dest_dir}", labelled])
    delvewheel = " ".join([label, "&& delvewheel repair", *map(shlex.quote, recipe.delvewheel_args()),
                           "-w {dest_dir}", labelled])
    delocate = " ".join([label, "&& delocate-wheel --require-archs {delocate_archs} -w {dest_dir}", labelled])
    return "\n".join([
        f"CIBW_CONFIG_SETTINGS={settings}",
        f"CIBW_REPAIR_WHEEL_COMMAND_LINUX={auditwheel}",
        f"CIBW_REPAIR_WHEEL_COMMAND_WINDOWS={delvewheel}",
        f"CIBW_REPAIR_WHEEL_COMMAND_MACOS={delocate}",
        # the GPU backend may not load on the test runner: the smoke test then checks the fallback
        f"LLAMAHOST_WHEEL_BACKEND={recipe.backend}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", choices=sorted(RECIPES))
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--github-env", action="store_true", help="print the cibuildwheel settings as NAME=value lines")
    what.add_argument("--backend", action="store_true", help="print the backend")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.index]
    print(github_env(recipe) if args.github_env else recipe.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
