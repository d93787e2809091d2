# The peers we measure and compare against, built from the same vendor/llama.cpp:
#   llama-server  upstream's server binary, from the unpatched sources of llama-server-impl
#   llama-bench   upstream's benchmark tool
# Both land in <build>/peers. Include this before patching llama-server-impl.
get_target_property(_impl_sources llama-server-impl SOURCES)
get_target_property(_impl_dir llama-server-impl SOURCE_DIR)
list(TRANSFORM _impl_sources PREPEND ${_impl_dir}/ REGEX "^[^/]")
add_library(llamahost-upstream-server-impl STATIC ${_impl_sources})
target_include_directories(llamahost-upstream-server-impl PUBLIC ${_impl_dir} PRIVATE ${LLAMA_DIR}/tools/mtmd ${LLAMA_DIR})
target_link_libraries(llamahost-upstream-server-impl PUBLIC server-context llama-ui cpp-httplib)
add_dependencies(llamahost-upstream-server-impl llama-ui-assets)

add_executable(llamahost-peer-llama-server ${_impl_dir}/main.cpp)
target_link_libraries(llamahost-peer-llama-server PRIVATE llamahost-upstream-server-impl)
set_target_properties(llamahost-peer-llama-server PROPERTIES OUTPUT_NAME llama-server
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/peers)
set_target_properties(llama-bench PROPERTIES EXCLUDE_FROM_ALL OFF RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/peers)
if(GGML_BACKEND_DL)
    # a portable build's backends are modules, which llama-server and llama-bench look for beside
    # themselves (ggml_backend_load_all): linked there from the build's bin folder
    foreach(module ${GGML_AVAILABLE_BACKENDS})
        if(TARGET ${module})
            add_dependencies(llamahost-peer-llama-server ${module})
            add_custom_command(TARGET llamahost-peer-llama-server POST_BUILD
                COMMAND ${CMAKE_COMMAND} -E create_symlink $<TARGET_FILE:${module}>
                        ${CMAKE_BINARY_DIR}/peers/$<TARGET_FILE_NAME:${module}>)
        endif()
    endforeach()
endif()
