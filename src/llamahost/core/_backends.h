// Which ggml backends this process uses, chosen once, before the first model or device query.
// Wheels carry each backend as a module beside the extension (GGML_BACKEND_DL): a GPU module
// that cannot load (no driver, too old a driver, no device) is skipped, never an import error.
#pragma once

#include <string>
#include <vector>

namespace llamahost {

// Where the backend modules lie: the package directory. Set once, at import.
void set_backend_dir(const std::string & dir);

// Loads the backends once per process; later calls with the same choice return at once.
// forced == "": the fallback chain, the first GPU backend of cuda, hip, metal, vulkan that loads
// and finds a device, else the CPU alone, with one logged warning saying why.
// forced == a backend name: that backend only ("cpu": no GPU at all). Throws std::invalid_argument
// for an unknown name and std::runtime_error when the forced backend cannot be used, or when the
// backends were already loaded with another choice.
void load_backends(const std::string & forced);

// JSON: {"active": "vulkan", "cpu_variant": "zen4", "unavailable": {"cuda": "why"}}; cpu_variant
// is "" when the CPU backend is linked in rather than loaded.
std::string backends_json();

// Serves this process's devices to other llama.cpp processes over ggml RPC at endpoint
// ("host:port") until the process ends: the named devices, or every GPU, else the CPU. cache_dir
// "" keeps no local copy of the tensors sent. Loads the backends first. Throws
// std::invalid_argument naming an unknown device (and the known ones) and std::runtime_error when
// this build has no RPC backend or the server cannot listen there.
void rpc_serve(const std::string & endpoint, const std::string & cache_dir, int n_threads,
               const std::vector<std::string> & device_names);

}  // namespace llamahost
