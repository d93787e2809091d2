#!/usr/bin/env bash
# The Vulkan toolchain b11312 needs, on Debian 12 (bookworm), without installing anything newer:
# Debian 13's Vulkan headers 1.4.309 (bookworm's 1.3.239 lack VK_EXT_layer_settings), SPIR-V
# headers and glslc 2025.2 (bookworm's 2023.2 lacks the cooperative-matrix, integer-dot and bfloat16
# extensions, so ggml would build those shaders out), extracted into PREFIX. glslc runs with
# Debian 13's C and C++ libraries through their own loader. The Vulkan loader to link against is
# bookworm's (apt-get install libvulkan-dev).
#   bash wheels/toolchains/debian-vulkan.sh build/toolchains/vulkan    # prints the CMake definitions, one a line
#   python wheels/build.py vulkan $(bash wheels/toolchains/debian-vulkan.sh build/toolchains/vulkan)
set -euo pipefail
prefix=$(realpath -m "${1:?usage: debian-vulkan.sh PREFIX}")
root=$prefix/root
lib=$root/usr/lib/x86_64-linux-gnu

if [ ! -x "$prefix/bin/glslc" ]; then
    [ -e /usr/lib/x86_64-linux-gnu/libvulkan.so ] || { echo "apt-get install libvulkan-dev first" >&2; exit 1; }
    apt=$prefix/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$root" "$prefix/bin"
    echo "deb http://deb.debian.org/debian trixie main" > "$apt/sources.list"
    # apt's own lists and cache, apart from the system's: nothing is installed
    o=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$apt/lists"
       -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null)
    apt-get "${o[@]}" update >&2
    (cd "$apt/debs" && apt-get "${o[@]}" download libvulkan-dev spirv-headers glslc libshaderc1 libc6 libstdc++6 \
        libgcc-s1 >&2)
    for deb in "$apt/debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
    cat > "$prefix/bin/glslc" <<EOF
#!/bin/sh
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$root/usr/bin/glslc" "\$@"
EOF
    chmod +x "$prefix/bin/glslc"
    "$prefix/bin/glslc" --version >&2
fi
printf '%s\n' "-DVulkan_INCLUDE_DIR=$root/usr/include" "-DVulkan_GLSLC_EXECUTABLE=$prefix/bin/glslc" \
    "-DSPIRV-Headers_DIR=$root/usr/share/cmake/SPIRV-Headers"
