# llama.cpp's web UI built from its sources with npm, then embedded by upstream's own
# scripts/ui-assets.cmake (gzipped assets in a generated ui.cpp/ui.h). Run as a script:
#
#   cmake -DNODE_DIR=<folder of node and npm> -DUI_SOURCE_DIR=<vendor>/tools/ui -DUI_BINARY_DIR=<out>
#         -DLLAMA_SOURCE_DIR=<vendor> -DLLAMA_BUILD_NUMBER=N -DPYTHON=<python>
#         [-DUI_DIST=<a dist folder built before>] -P cmake/ui.cmake
#
# The licences of the npm packages go into the dist folder (THIRD_PARTY_LICENSES.txt): served
# with the UI, and installed beside the extension.
#
# Unlike upstream, which only warns and builds a server without a UI, a failed npm step fails
# the build with npm's own output (LLAMAHOST_UI=OFF is the way to build without the UI).
# node_modules stays in <out>/src between builds: npm ci runs again only for a new package-lock.

cmake_minimum_required(VERSION 3.21)

set(WORK_DIR  "${UI_BINARY_DIR}/src")    # a copy of tools/ui, where npm works (the vendor tree stays pristine)
set(EMBED_DIR "${UI_BINARY_DIR}/embed")  # upstream's script embeds ${EMBED_DIR}/dist as pre-built assets

function(run_npm what)
    execute_process(
        COMMAND ${CMAKE_COMMAND} -E env "PATH=${NODE_DIR}:$ENV{PATH}" "LLAMA_UI_OUT_DIR=${EMBED_DIR}/dist"
                "LLAMA_BUILD_NUMBER=${LLAMA_BUILD_NUMBER}" "LLAMA_UI_VERSION=b${LLAMA_BUILD_NUMBER}"
                "${NODE_DIR}/npm" ${ARGN}
        WORKING_DIRECTORY "${WORK_DIR}"
        RESULT_VARIABLE rc
        OUTPUT_VARIABLE out
        ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "UI: ${what} failed (${rc}):\n${out}\n${err}\n"
                            "Set LLAMAHOST_UI=OFF to build llama.cpp's server without its web UI.")
    endif()
endfunction()

file(REMOVE_RECURSE "${EMBED_DIR}")
if(UI_DIST)
    if(NOT EXISTS "${UI_DIST}/index.html")
        message(FATAL_ERROR "UI: LLAMAHOST_UI_DIST=${UI_DIST} holds no built UI (no index.html)")
    endif()
    file(COPY "${UI_DIST}/" DESTINATION "${EMBED_DIR}/dist")
else()
    file(GLOB staged RELATIVE "${WORK_DIR}" "${WORK_DIR}/*")
    list(REMOVE_ITEM staged "node_modules")
    foreach(entry ${staged})
        file(REMOVE_RECURSE "${WORK_DIR}/${entry}")
    endforeach()
    file(COPY "${UI_SOURCE_DIR}/" DESTINATION "${WORK_DIR}" PATTERN "node_modules" EXCLUDE PATTERN "dist" EXCLUDE)

    # npm records each install in node_modules/.package-lock.json: older than package-lock.json, it is stale
    set(marker "${WORK_DIR}/node_modules/.package-lock.json")
    if(NOT EXISTS "${marker}" OR "${WORK_DIR}/package-lock.json" IS_NEWER_THAN "${marker}")
        message(STATUS "UI: npm ci")
        run_npm("npm ci" ci --no-audit --no-fund)
    endif()
    message(STATUS "UI: npm run build")
    run_npm("npm run build" run build)
    execute_process(COMMAND "${PYTHON}" "${CMAKE_CURRENT_LIST_DIR}/ui_licenses.py" "${WORK_DIR}"
                            "${EMBED_DIR}/dist/THIRD_PARTY_LICENSES.txt" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "UI: collecting the npm packages' licences failed (${rc})")
    endif()
endif()
if(NOT EXISTS "${EMBED_DIR}/dist/THIRD_PARTY_LICENSES.txt")
    message(FATAL_ERROR "UI: ${EMBED_DIR}/dist has no THIRD_PARTY_LICENSES.txt: a UI ships with its licences")
endif()

execute_process(
    COMMAND ${CMAKE_COMMAND} "-DUI_SOURCE_DIR=${EMBED_DIR}" "-DUI_BINARY_DIR=${UI_BINARY_DIR}"
            "-DLLAMA_SOURCE_DIR=${LLAMA_SOURCE_DIR}" "-DLLAMA_BUILD_NUMBER=${LLAMA_BUILD_NUMBER}"
            -DHF_ENABLED=OFF -DBUILD_UI=OFF -DLLAMA_UI_GZIP=ON
            -P "${LLAMA_SOURCE_DIR}/scripts/ui-assets.cmake"
    RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT EXISTS "${UI_BINARY_DIR}/ui.cpp")
    message(FATAL_ERROR "UI: embedding the built assets failed (${rc})")
endif()
