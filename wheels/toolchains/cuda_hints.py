"""CMake definitions for a CUDA toolkit that lacks some of what ggml's CUDA backend links: a toolkit
installed from NVIDIA's pip wheels (nvcc without cuBLAS, no libcuda.so stub), or cuBLAS only in a
pip wheel beside a framework. Prints a CMake definition per line for what nvcc cannot find by
itself, and nothing when it finds everything.

    python wheels/toolchains/cuda_hints.py        # -DCUDA_cublas_LIBRARY=... (wheels/build.py's form)
    python wheels/toolchains/cuda_hints.py --pip  # --config-settings=cmake.define.CUDA_cublas_LIBRARY=...

cuBLAS's headers and libraries come from NVIDIA's pip wheels importable here (``nvidia/cu13`` for
CUDA 13, ``nvidia/cublas`` for 12); the CUDA runtime likewise; the driver library ``libcuda.so.1``
from the system's linker cache (a GPU machine's driver). A machine with no driver at all gets
``GGML_CUDA_NO_VMM=ON``: a module that does not link the driver (its memory pool without CUDA's
virtual memory management), the only kind that machine can link.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# CMake's FindCUDAToolkit variable for each library ggml-cuda links
LIBRARIES = {"cudart": "CUDA_cudart_LIBRARY", "cublas": "CUDA_cublas_LIBRARY", "cublasLt": "CUDA_cublasLt_LIBRARY",
             "cuda": "CUDA_cuda_driver_LIBRARY"}


def nvcc_can(args: list[str], source: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        cu = Path(tmp) / "probe.cu"
        cu.write_text(source)
        done = subprocess.run(["nvcc", *args, str(cu), "-o", str(Path(tmp) / "probe")], capture_output=True, timeout=120)
    return done.returncode == 0


def pip_dirs() -> list[Path]:
    """NVIDIA's pip wheels' folders holding include/ and lib/ (nvidia/cu13, nvidia/cublas, ...)."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted({lib.parent for root in nvidia.__path__ for lib in Path(root).glob("*/lib")})


def pip_library(name: str) -> Path | None:
    found = sorted(p for d in pip_dirs() for p in d.glob(f"lib/lib{name}.so.*") if re.fullmatch(rf"lib{name}\.so\.\d+", p.name))
    return found[-1] if found else None


def driver_library() -> Path | None:
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    found = re.search(r"\blibcuda\.so\.1 \(libc6,x86-64\) => (\S+)", cache)
    return Path(found[1]) if found else None


def hints() -> dict[str, str]:
    out = {}
    if not nvcc_can(["-E"], "#include <cublas_v2.h>\n"):
        headers = next((d / "include" for d in pip_dirs() if (d / "include" / "cublas_v2.h").exists()), None)
        if headers is None:
            raise SystemExit("cublas_v2.h: neither in the CUDA toolkit nor in an importable nvidia-cublas wheel")
        out["CMAKE_CUDA_FLAGS"] = f"-I{headers}"
    for name, variable in LIBRARIES.items():
        if nvcc_can([f"-l{name}"], "int main() { return 0; }\n"):
            continue
        path = driver_library() if name == "cuda" else pip_library(name)
        if name == "cuda" and path is None:
            print("cuda_hints: no CUDA driver library here: GGML_CUDA_NO_VMM=ON", file=sys.stderr)
            out["GGML_CUDA_NO_VMM"] = "ON"
        elif path is None:
            raise SystemExit(f"lib{name}: neither found by nvcc nor in an importable pip wheel")
        else:
            out[variable] = str(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pip", action="store_true", help="as pip's -C cmake.define.NAME=VALUE")
    args = parser.parse_args(argv)
    for name, value in hints().items():
        print(f"--config-settings=cmake.define.{name}={value}" if args.pip else f"-D{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
