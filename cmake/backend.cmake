# Maps LLAMAHOST_BACKEND and LLAMAHOST_PORTABLE onto ggml's options.
# LLAMAHOST_BACKEND is one backend, or several GPU backends separated by commas
# (LLAMAHOST_BACKEND=cuda,vulkan): a portable build then carries a module for each, and the
# package falls back along them at run time (CUDA -> HIP -> Metal -> Vulkan -> CPU).
set(_chain cuda hip metal vulkan)  # the loader's order, src/llamahost/core/_backends.cpp
string(TOLOWER "${LLAMAHOST_BACKEND}" _requested)
string(REPLACE "," ";" _requested "${_requested}")
foreach(name ${_requested})
    if(NOT name STREQUAL "cpu" AND NOT name IN_LIST _chain)
        string(JOIN ", " _known cpu ${_chain})
        message(FATAL_ERROR "LLAMAHOST_BACKEND=${LLAMAHOST_BACKEND}: ${name} is none of ${_known}")
    endif()
endforeach()
list(LENGTH _requested _n_requested)
if(_n_requested GREATER 1)
    if("cpu" IN_LIST _requested)
        message(FATAL_ERROR "LLAMAHOST_BACKEND=${LLAMAHOST_BACKEND}: the CPU is always there; list GPU backends only")
    endif()
    if(NOT LLAMAHOST_PORTABLE)
        message(FATAL_ERROR "LLAMAHOST_BACKEND=${LLAMAHOST_BACKEND}: several backends need LLAMAHOST_PORTABLE=ON "
                            "(one module each, loaded at run time)")
    endif()
endif()

# _backend: what the extension records (system_info()["backend"]), the GPU backends in the chain's order
set(_gpu_backends "")
foreach(name ${_chain})
    string(TOUPPER "${name}" upper)
    if(name IN_LIST _requested)
        list(APPEND _gpu_backends ${name})
        set(GGML_${upper} ON CACHE BOOL "" FORCE)
    else()
        set(GGML_${upper} OFF CACHE BOOL "" FORCE)
    endif()
endforeach()
if(_gpu_backends)
    string(JOIN "," _backend ${_gpu_backends})
else()
    set(_backend cpu)
endif()

# ggml RPC in every build: `llamahost rpc-server` offers a machine's devices, `--rpc` uses them
set(GGML_RPC ON CACHE BOOL "ggml: RPC client and server" FORCE)

if(LLAMAHOST_PORTABLE)
    set(GGML_BACKEND_DL ON CACHE BOOL "" FORCE)
    set(GGML_NATIVE OFF CACHE BOOL "" FORCE)
    # -DGGML_CPU_ALL_VARIANTS=OFF builds one CPU module instead (ggml's defaults: AVX2, FMA, F16C)
    set(GGML_CPU_ALL_VARIANTS ON CACHE BOOL "ggml: build all variants of the CPU backend")
endif()
