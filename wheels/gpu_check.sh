#!/usr/bin/env bash
# The GPU check (issue 22): on a machine with an NVIDIA GPU and its driver that reaches no network
# (the device tool's nvidia-h200: 16 cores, Python 3.12, nvcc 13, cmake, ninja), build llamahost's
# CUDA backend for that GPU's architecture as the CUDA wheels build it (portable: ggml's backends as
# modules) with llama-server beside it, put the Vulkan module built here beside the CUDA one, and run
# wheels/gpu_check.py: devices, estimate() against real loads and the driver, the suite's GPU tests,
# tokens/s against llama-server, a pool's evictions, Vulkan on the same GPU. One summary, one JSON.
#
# Launch, from a checkout on the CPU machine (the kit holds what the GPU machine cannot download):
#   python wheels/gpu_kit.py     # gpu-kit/ (ignored by git): needs a wheel holding the Vulkan module
#                                # under dist/wheels (docs/WHEELS.md); prints the kit's and tree's size
#   the device tool: run(command="bash wheels/gpu_check.sh", carry=["gpu-kit"], timeout_s=600)
# The reply's output_tail ends with the summary; its files are gpu_check.json, gpu_check.log and
# gpu_tests.xml. Everything ends within 585 s (GPU_CHECK_SECONDS): should the build or the checks run
# out of time, the same call, made at once (the machine stays warm for 30 s), continues: the build
# folder (build/gpu-cuda), the models and the passed steps stay on the machine.
#
# Steps and their limits (expected on 16 cores, from measurements on 2: docs/WHEELS.md):
#   unpack   60 s (~10 s)   vendor/llama.cpp from the kit; Debian's Vulkan loader, patch and ccache where
#                            the machine lacks them; the kit's Python wheels into /tmp/gpu-kit/site
#   build   what is left (~4-5 min)  pip install -e . for CUDA on this GPU's architecture only, one CPU
#                            module, the peers; all cores, ccache; the 144 CUDA objects are the long pole
#   vulkan   30 s (~1 s)    the kit's libggml-vulkan.so beside libggml-cuda.so
#   checks                  wheels/gpu_check.py, each step under its own limit (~3-4 min in all)
#
# On the CPU machine (CI): `bash wheels/gpu_check.sh --cpu-only` runs gpu_check.py against the CPU
# build installed here, with small models (under a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
export PY=${PYTHON:-python3}
if [ "${1:-}" = "--cpu-only" ]; then
    exec "$PY" wheels/gpu_check.py --cpu-only --out build/gpu-check-cpu
fi

# the device tool's call ends at its timeout_s (600): every step ends before, what is left waits for another call
deadline=$(($(date +%s) + ${GPU_CHECK_SECONDS:-585}))
export KIT=$PWD/gpu-kit
out=${OUT:-$PWD/build/gpu-check-out}  # the device tool's $OUT comes back with its reply: 3 files
work=$PWD/build/gpu-check-work       # the models, the steps' files
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PATH=$PATH:/usr/local/cuda/bin:/tmp/gpu-kit/root/usr/bin
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/tmp/gpu-kit/root/usr/lib/x86_64-linux-gnu
export PYTHONPATH=/tmp/gpu-kit/site${PYTHONPATH:+:$PYTHONPATH}

timed() {  # NAME LIMIT COMMAND...: the command under a time limit; NAME_s gets its wall time
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "[gpu-check] $name (at most $limit s): $*"
    timeout --kill-after=10 "$limit" "$@" || { echo "[gpu-check] $name FAILED (exit $?) after $((SECONDS - start)) s"; exit 1; }
    echo "[gpu-check] $name: $((SECONDS - start)) s"
    printf -v "${name}_s" %d $((SECONDS - start))
}

unpack() {
    set -euo pipefail
    if [ ! -f vendor/llama.cpp/CMakeLists.txt ]; then
        "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall("vendor", filter="data")' "$KIT/llama.cpp.tar.xz"
    fi
    # NVIDIA's Vulkan driver needs a loader and GL libraries: unpacked into / (the device tool's notes)
    if ! ldconfig -p | grep 'libvulkan\.so\.1 ' >/dev/null; then
        for deb in "$KIT"/debs/lib{vulkan1,egl1,glvnd0,opengl0,gl1,glx0,gles2}_*.deb; do dpkg-deb -x "$deb" /; done
        ldconfig
    fi
    # patch (the build patches upstream's sources) and ccache, where the machine has none: beside, not over it
    command -v patch >/dev/null || dpkg-deb -x "$KIT"/debs/patch_*.deb /tmp/gpu-kit/root
    if ! command -v ccache >/dev/null; then
        for deb in "$KIT"/debs/{ccache,libhiredis}*.deb; do dpkg-deb -x "$deb" /tmp/gpu-kit/root; done
        ccache --version >/dev/null || rm /tmp/gpu-kit/root/usr/bin/ccache  # a launcher that fails would fail every compile
    fi
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target /tmp/gpu-kit/site "$KIT"/wheels/*.whl
}
export -f unpack

build_info() {  # the build's figures, for gpu_check.json
    "$PY" - "$KIT/MANIFEST.json" "$work/build.json" "$arch-real" "$unpack_s" "$build_s" "$package" "${hints[@]}" <<'EOF'
import json, os, shutil, subprocess, sys
manifest, out, arch, unpack_s, build_s, package, *hints = sys.argv[1:]
def lines(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines() if shutil.which(cmd[0]) else []
kit = json.load(open(manifest))
json.dump({"commit": kit["commit"], "dirty": kit["dirty"], "cuda_architectures": arch, "cores": os.cpu_count(),
           "unpack_s": int(unpack_s), "build_s": int(build_s), "toolkit_hints": hints, "package": package,
           "nvcc": lines("nvcc", "--version")[-1:], "cmake": lines("cmake", "--version")[:1],
           "ccache": lines("ccache", "--version")[:1]}, open(out, "w"), indent=1)
EOF
}

check() {
    [ -f "$KIT/MANIFEST.json" ] || { echo "no $KIT/MANIFEST.json: make the kit (python wheels/gpu_kit.py) and carry gpu-kit"; exit 1; }
    for tool in nvidia-smi nvcc cmake ninja gcc g++; do
        command -v $tool >/dev/null || { echo "[gpu-check] $tool is missing: this machine cannot build the CUDA backend"; exit 1; }
    done
    timed unpack 60 bash -c unpack
    if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json  # the driver's mount, not searched
    fi

    arch=$(nvidia-smi -i 0 --query-gpu=compute_cap --format=csv,noheader | tr -d '. ')
    mapfile -t hints < <(timeout 120 "$PY" wheels/toolchains/cuda_hints.py --pip)  # what this toolkit lacks, if anything
    echo "[gpu-check] CUDA architecture $arch; toolkit hints: ${hints[*]:-none}"
    export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CCACHE_DIR=${CCACHE_DIR:-$PWD/build/gpu-ccache} CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
    # as the CUDA wheels are built (wheels/recipes.py: portable), for this GPU only, with the peers
    timed build $((deadline - $(date +%s) - 30)) "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . \
        --config-settings=build-dir=build/gpu-cuda \
        --config-settings=cmake.define.LLAMAHOST_BACKEND=cuda \
        --config-settings=cmake.define.LLAMAHOST_PORTABLE=ON \
        --config-settings=cmake.define.GGML_CPU_ALL_VARIANTS=OFF \
        --config-settings=cmake.define.LLAMAHOST_BUILD_PEERS=ON \
        --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$arch-real" "${hints[@]}"

    package=$("$PY" -c 'import os, llamahost.core._native as n; print(os.path.dirname(n.__file__))')
    timed vulkan 30 "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$KIT/libggml-vulkan.so.xz" "$package/libggml-vulkan.so"
    build_info
    "$PY" wheels/gpu_check.py --out "$out" --work "$work" --build-info "$work/build.json" --deadline "$deadline"
}

mkdir -p "$out" "$work" /tmp/gpu-kit/root
check 2>&1 | tee "$out/gpu_check.log"  # a pipe the script waits for: the log and the reply end with the summary
exit "${PIPESTATUS[0]}"
