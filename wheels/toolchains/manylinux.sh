#!/usr/bin/env bash
# cibuildwheel's before-all in the manylinux_2_28 container (AlmaLinux 8): ccache, and the
# toolchain of each backend being built (LLAMAHOST_WHEEL_BACKEND, from wheels/recipes.py, e.g.
# "cuda,vulkan" for the CUDA indexes):
#   cuda    the CUDA toolkit LLAMAHOST_CUDA (e.g. 12.4, 13.0) from NVIDIA's repository, in /usr/local/cuda
#   vulkan  Vulkan headers, SPIR-V headers and glslc in /opt/vulkan-sdk/x86_64, from source: the
#           LunarG SDK's glslc needs a newer glibc than manylinux has
set -euo pipefail

VULKAN_HEADERS_TAG=v1.4.309
SHADERC_TAG=v2025.1
PREFIX=/opt/vulkan-sdk/x86_64

dnf install -y epel-release
dnf install -y ccache

backends=",${LLAMAHOST_WHEEL_BACKEND:-cpu},"

if [[ $backends == *,cuda,* ]]; then
    v=${LLAMAHOST_CUDA:?LLAMAHOST_CUDA names the toolkit, e.g. 12.4}
    dnf config-manager --add-repo https://developer.download.nvidia.com/compute/cuda/repos/rhel8/x86_64/cuda-rhel8.repo
    dnf install -y "cuda-nvcc-${v/./-}" "cuda-cudart-devel-${v/./-}" "cuda-driver-devel-${v/./-}" \
        "cuda-cccl-${v/./-}" "libcublas-devel-${v/./-}"
    ln -sfn "/usr/local/cuda-$v" /usr/local/cuda
fi

if [[ $backends == *,vulkan,* ]]; then
    dnf install -y git ninja-build vulkan-loader-devel
    work=$(mktemp -d)
    git clone --depth 1 --branch "$VULKAN_HEADERS_TAG" https://github.com/KhronosGroup/Vulkan-Headers "$work/headers"
    cmake -S "$work/headers" -B "$work/headers/build" -DCMAKE_INSTALL_PREFIX="$PREFIX"
    cmake --install "$work/headers/build"
    git clone --depth 1 --branch "$SHADERC_TAG" https://github.com/google/shaderc "$work/shaderc"
    /opt/python/cp312-cp312/bin/python "$work/shaderc/utils/git-sync-deps"
    cmake -S "$work/shaderc" -B "$work/shaderc/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DSHADERC_SKIP_TESTS=ON -DSHADERC_SKIP_EXAMPLES=ON -DSPIRV_SKIP_TESTS=ON
    cmake --build "$work/shaderc/build" --target glslc_exe
    install -D "$work/shaderc/build/glslc/glslc" "$PREFIX/bin/glslc"
    cmake -S "$work/shaderc/third_party/spirv-headers" -B "$work/spirv-headers" -DCMAKE_INSTALL_PREFIX="$PREFIX"
    cmake --install "$work/spirv-headers"
    rm -rf "$work"
fi
