# Portable builds (wheels): ggml as shared libraries in the package, its backends as modules that
# _backends.cpp loads at run time (GPU modules beside the extension, the CPU variants in cpu/).
# ggml is added here, before llama.cpp, which then uses it ("added by a parent CMakeLists.txt"),
# so that only ggml is shared and llama.cpp stays static and private inside the extension.

# what llama.cpp's own CMakeLists sets before it adds ggml
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(GGML_LLAMAFILE ON CACHE BOOL "ggml: use LLAMAFILE")
set(GGML_CUDA_GRAPHS ON CACHE BOOL "ggml: use CUDA graphs (llama.cpp only)")

if(APPLE)
    set(_origin @loader_path)
else()
    set(_origin $ORIGIN)
endif()
set(CMAKE_INSTALL_RPATH ${_origin})

set(BUILD_SHARED_LIBS ON)
add_subdirectory(${LLAMA_DIR}/ggml llama.cpp/ggml EXCLUDE_FROM_ALL)
set(BUILD_SHARED_LIBS OFF)

# one file per library in the wheel, not a chain of version symlinks; no headers
foreach(property VERSION SOVERSION PUBLIC_HEADER)
    set_property(TARGET ggml ggml-base PROPERTY ${property})
endforeach()
# names of our own: another package's libggml.so already loaded in the process (llama-cpp-python
# ships one) would otherwise stand in for ours, its ABI for ours
set_target_properties(ggml PROPERTIES OUTPUT_NAME llamahost-ggml)
set_target_properties(ggml-base PROPERTIES OUTPUT_NAME llamahost-ggml-base)
install(TARGETS ggml ggml-base LIBRARY DESTINATION ${LLAMAHOST_INSTALL_DIR} RUNTIME DESTINATION ${LLAMAHOST_INSTALL_DIR})
foreach(module ${GGML_AVAILABLE_BACKENDS})
    if(NOT TARGET ${module})
        continue()
    endif()
    set(destination ${LLAMAHOST_INSTALL_DIR})
    if(module MATCHES "^ggml-cpu")
        set(destination ${LLAMAHOST_INSTALL_DIR}/cpu)
        set_target_properties(${module} PROPERTIES INSTALL_RPATH "${_origin}/..")
    elseif(module STREQUAL "ggml-cuda")
        # CUDA's runtime and cuBLAS from the system, or from NVIDIA's pip wheels beside the package
        # (site-packages/nvidia, two levels above llamahost/core): CUDA 13's in nvidia/cu13/lib,
        # CUDA 12's in a folder per library
        find_package(CUDAToolkit REQUIRED)
        if(CUDAToolkit_VERSION_MAJOR GREATER_EQUAL 13)
            set(cuda_dirs ${_origin}/../../nvidia/cu${CUDAToolkit_VERSION_MAJOR}/lib)
        else()
            set(cuda_dirs ${_origin}/../../nvidia/cuda_runtime/lib ${_origin}/../../nvidia/cublas/lib)
        endif()
        set_target_properties(${module} PROPERTIES INSTALL_RPATH "${_origin};${cuda_dirs}")
    endif()
    install(TARGETS ${module} LIBRARY DESTINATION ${destination} RUNTIME DESTINATION ${destination})
endforeach()
