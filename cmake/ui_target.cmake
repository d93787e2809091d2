# The web UI in llama.cpp's server: upstream's llama-ui library compiled from the ui.cpp that
# cmake/ui.cmake generates (npm build of tools/ui, never the prebuilt download upstream defaults
# to). npm runs again only when a source of tools/ui changes (upstream's own list of them).
if(NOT LLAMAHOST_UI)
    message(WARNING "LLAMAHOST_UI=OFF: llama.cpp's server is built without its web UI")
    return()
endif()

set(_ui_dir ${CMAKE_BINARY_DIR}/ui)
set(_node_dir "")
if(NOT LLAMAHOST_UI_DIST)
    execute_process(COMMAND ${Python_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/cmake/node.py
                    OUTPUT_VARIABLE _node_dir OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "The web UI needs Node.js ^20.19 or >= 22.12 (see above), "
                            "or LLAMAHOST_UI=OFF to build without it")
    endif()
    message(STATUS "Web UI: Node.js from ${_node_dir}")
endif()

include(${LLAMA_DIR}/tools/ui/sources.cmake)
list(TRANSFORM UI_SOURCE_GLOBS PREPEND ${LLAMA_DIR}/tools/ui/)
list(TRANSFORM UI_SOURCE_FILES PREPEND ${LLAMA_DIR}/tools/ui/)
file(GLOB_RECURSE _ui_sources CONFIGURE_DEPENDS ${UI_SOURCE_GLOBS})
foreach(_file ${UI_SOURCE_FILES})
    if(EXISTS ${_file})  # upstream's list names a file b11312 no longer has
        list(APPEND _ui_sources ${_file})
    endif()
endforeach()

add_custom_command(
    OUTPUT ${_ui_dir}/ui.cpp ${_ui_dir}/ui.h
    COMMAND ${CMAKE_COMMAND} -DNODE_DIR=${_node_dir} -DUI_SOURCE_DIR=${LLAMA_DIR}/tools/ui -DUI_BINARY_DIR=${_ui_dir}
            -DLLAMA_SOURCE_DIR=${LLAMA_DIR} -DLLAMA_BUILD_NUMBER=${LLAMA_BUILD_NUMBER}
            -DPYTHON=${Python_EXECUTABLE} -DUI_DIST=${LLAMAHOST_UI_DIST} -P ${CMAKE_CURRENT_SOURCE_DIR}/cmake/ui.cmake
    DEPENDS ${_ui_sources} ${CMAKE_CURRENT_SOURCE_DIR}/cmake/ui.cmake
            ${CMAKE_CURRENT_SOURCE_DIR}/cmake/ui_licenses.py
    COMMENT "llama.cpp's web UI: npm ci, npm run build, embedded"
    VERBATIM)
add_custom_target(llamahost-ui-assets DEPENDS ${_ui_dir}/ui.cpp ${_ui_dir}/ui.h)

set_property(TARGET llama-ui PROPERTY SOURCES ${_ui_dir}/ui.cpp ${_ui_dir}/ui.h)
target_include_directories(llama-ui BEFORE PUBLIC ${_ui_dir})  # before upstream's empty ui.h
add_dependencies(llama-ui llamahost-ui-assets)
install(FILES ${_ui_dir}/embed/dist/THIRD_PARTY_LICENSES.txt DESTINATION ${LLAMAHOST_INSTALL_DIR}
        RENAME UI_THIRD_PARTY_LICENSES.txt)
