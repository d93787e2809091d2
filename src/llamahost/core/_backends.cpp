#include "_backends.h"

#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "json.h"
#include "log.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#ifdef GGML_BACKEND_DL
#    ifdef _WIN32
#        define WIN32_LEAN_AND_MEAN
#        include <windows.h>
#    else
#        include <dlfcn.h>
#    endif
#endif

namespace llamahost {

namespace {

namespace fs = std::filesystem;

// The GPU backends in the order the package falls back along; the CPU comes last, always.
const std::vector<std::string> k_gpu_chain = {"cuda", "hip", "metal", "vulkan"};

struct backend_state {
    bool loaded = false;
    std::string forced;
    std::string active;
    std::string cpu_variant;
    std::map<std::string, std::string> unavailable;  // backend -> why
};

std::mutex g_mu;
std::string g_dir;
backend_state g_state;

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return (char) std::tolower(c); });
    return s;
}

void check_name(const std::string & name) {
    if (name != "cpu" && std::find(k_gpu_chain.begin(), k_gpu_chain.end(), name) == k_gpu_chain.end()) {
        throw std::invalid_argument("LLAMAHOST_BACKEND=" + name + ": expected one of cpu, cuda, hip, metal, vulkan");
    }
}

std::string join_reasons(const std::map<std::string, std::string> & reasons) {
    std::string out;
    for (const auto & [name, why] : reasons) {
        out += (out.empty() ? "" : "; ") + name + ": " + why;
    }
    return out;
}

#ifdef GGML_BACKEND_DL

// Holds back ggml's log while a backend loads: replayed when it loads, dropped when it does not,
// its last error kept as the reason (dlopen's message, the driver's complaint).
class held_log {
public:
    held_log() {
        ggml_log_get(&prev_cb_, &prev_data_);
        ggml_log_set(&held_log::hold, this);
    }
    ~held_log() { ggml_log_set(prev_cb_, prev_data_); }

    void replay() const {
        for (const auto & [level, text] : lines_) {
            if (prev_cb_ != nullptr) {
                prev_cb_(level, text.c_str(), prev_data_);
            }
        }
    }

    std::string last_error(const std::string & otherwise) const {
        std::string out = last_error_.empty() ? otherwise : last_error_;
        while (!out.empty() && std::isspace((unsigned char) out.back())) {
            out.pop_back();
        }
        return out;
    }

private:
    static void hold(ggml_log_level level, const char * text, void * data) {
        auto * self = static_cast<held_log *>(data);
        self->lines_.emplace_back(level, text);
        if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
            self->last_error_ = text;
        }
    }

    ggml_log_callback prev_cb_ = nullptr;
    void * prev_data_ = nullptr;
    std::vector<std::pair<ggml_log_level, std::string>> lines_;
    std::string last_error_;
};

fs::path module_path(const std::string & name) {
#    ifdef _WIN32
    return fs::u8path(g_dir) / fs::u8path("ggml-" + name + ".dll");
#    else
    return fs::u8path(g_dir) / fs::u8path("libggml-" + name + ".so");
#    endif
}

// The GPU backend's module loaded with at least one device, or nullptr and why not.
ggml_backend_reg_t load_gpu(const fs::path & path, const std::string & name, std::string & why) {
    held_log log;
    ggml_backend_reg_t reg = ggml_backend_load(path.u8string().c_str());
    if (reg == nullptr) {
        why = log.last_error("cannot load " + path.u8string());
        return nullptr;
    }
    if (ggml_backend_reg_dev_count(reg) == 0) {
        ggml_backend_unload(reg);
        why = log.last_error("no " + name + " device");
        return nullptr;
    }
    log.replay();
    return reg;
}

// "zen4" for .../cpu/libggml-cpu-zen4.so: the module the CPU backend's code came from.
std::string cpu_variant(ggml_backend_reg_t cpu) {
    void * code = ggml_backend_reg_get_proc_address(cpu, "ggml_backend_get_features");
    fs::path file;
#    ifdef _WIN32
    HMODULE module = nullptr;
    wchar_t name[MAX_PATH];
    if (GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                           (LPCWSTR) code, &module) &&
        GetModuleFileNameW(module, name, MAX_PATH) > 0) {
        file = name;
    }
#    else
    Dl_info info;
    if (code != nullptr && dladdr(code, &info) != 0 && info.dli_fname != nullptr) {
        file = info.dli_fname;
    }
#    endif
    std::string name = file.stem().u8string();
    if (name.rfind("lib", 0) == 0) {
        name = name.substr(3);
    }
    const std::string prefix = "ggml-cpu-";
    return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;  // "ggml-cpu": built as one module
}

void load(const std::string & forced, backend_state & state) {
    for (const auto & name : k_gpu_chain) {
        if (!forced.empty() && forced != name) {
            continue;
        }
        const fs::path path = module_path(name);
        std::error_code ec;
        if (!fs::exists(path, ec)) {
            if (forced == name) {
                throw std::runtime_error("LLAMAHOST_BACKEND=" + name + ": this package has no " + name +
                                         " backend; it was built for " LLAMAHOST_BACKEND);
            }
            continue;
        }
        std::string why;
        if (load_gpu(path, name, why) != nullptr) {
            state.active = name;
            break;
        }
        if (forced == name) {
            throw std::runtime_error("LLAMAHOST_BACKEND=" + name + ": the " + name + " backend cannot be used: " + why);
        }
        state.unavailable[name] = why;
    }
    // ggml picks the CPU variant that scores best on this CPU (SSE4.2 ... AVX-512, AMX)
    const std::string cpu_dir = (fs::u8path(g_dir) / "cpu").u8string();
    ggml_backend_load_all_from_path(cpu_dir.c_str());
    ggml_backend_reg_t cpu = ggml_backend_reg_by_name("CPU");
    if (cpu == nullptr) {
        throw std::runtime_error("no CPU backend in " + cpu_dir + " runs on this CPU");
    }
    state.cpu_variant = cpu_variant(cpu);
    if (state.active.empty()) {
        state.active = "cpu";
    }
    // the RPC client and server: a registration without devices until a worker is added
    std::error_code ec;
    if (fs::exists(module_path("rpc"), ec)) {
        ggml_backend_load(module_path("rpc").u8string().c_str());
    }
}

#else  // the backends are linked in: nothing to load, only the CPU can be chosen instead

// A GPU device: not the CPU, nor an accelerator that helps it (BLAS, AMX), which registers too.
bool is_gpu(ggml_backend_dev_t dev) {
    const auto type = ggml_backend_dev_type(dev);
    return type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU;
}

void load(const std::string & forced, backend_state & state) {
    std::vector<ggml_backend_reg_t> gpus;  // registrations with GPU devices, or the build's GPU backend without one
    size_t n_gpu_devices = 0;
    for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        const size_t n_dev = ggml_backend_reg_dev_count(reg);
        size_t n_gpu = 0;
        for (size_t d = 0; d < n_dev; d++) {
            n_gpu += is_gpu(ggml_backend_reg_dev_get(reg, d)) ? 1 : 0;
        }
        if (n_gpu > 0 || (n_dev == 0 && lower(ggml_backend_reg_name(reg)) == LLAMAHOST_BACKEND)) {
            gpus.push_back(reg);
            n_gpu_devices += n_gpu;
        }
    }
    if (forced == "cpu" || n_gpu_devices == 0) {  // a GPU backend without a device is of no use: unregistered
        for (ggml_backend_reg_t reg : gpus) {
            ggml_backend_unload(reg);
        }
    }
    if (forced == "cpu") {
        state.active = "cpu";
        return;
    }
    if (!forced.empty() && (forced != LLAMAHOST_BACKEND || n_gpu_devices == 0)) {
        throw std::runtime_error("LLAMAHOST_BACKEND=" + forced + ": this build has the " LLAMAHOST_BACKEND
                                 " backend linked in" + (n_gpu_devices == 0 ? std::string(" and no GPU device") : ""));
    }
    state.active = n_gpu_devices > 0 ? LLAMAHOST_BACKEND : "cpu";
    if (!gpus.empty() && n_gpu_devices == 0) {
        state.unavailable[LLAMAHOST_BACKEND] = "no device";
    }
}

#endif

}  // namespace

void set_backend_dir(const std::string & dir) {
    std::lock_guard<std::mutex> lock(g_mu);
    g_dir = dir;
}

void load_backends(const std::string & forced_name) {
    const std::string forced = lower(forced_name);
    if (!forced.empty()) {
        check_name(forced);
    }
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_state.loaded) {
        if (!forced.empty() && forced != g_state.forced && forced != g_state.active) {
            throw std::runtime_error("LLAMAHOST_BACKEND=" + forced + ": this process already uses the " +
                                     g_state.active + " backend; choose the backend before any other llamahost call");
        }
        return;
    }
    backend_state state;
    state.forced = forced;
    load(forced, state);
    if (!state.unavailable.empty()) {
        LOG_WRN("llamahost: %s; running on %s (LLAMAHOST_BACKEND=cpu skips this check)\n",
                join_reasons(state.unavailable).c_str(),
                state.active == "cpu" ? "the CPU" : state.active.c_str());
    }
    state.loaded = true;
    g_state = state;
}

void rpc_serve(const std::string & endpoint, const std::string & cache_dir, int n_threads,
               const std::vector<std::string> & device_names) {
    load_backends("");
    ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
    auto start = rpc == nullptr ? nullptr : (decltype(&ggml_backend_rpc_start_server))
        ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_start_server");
    if (start == nullptr) {
        throw std::runtime_error("this build of llamahost has no RPC backend (GGML_RPC=OFF)");
    }
    std::vector<ggml_backend_dev_t> devices;
    for (const auto & name : device_names) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
        if (dev == nullptr) {
            std::string known;
            for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
                known += (known.empty() ? "" : ", ") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
            }
            throw std::invalid_argument("no device named " + name + " here; the devices: " + known);
        }
        devices.push_back(dev);
    }
    // as upstream's rpc-server chooses: the GPUs, else the CPU
    for (size_t i = 0; device_names.empty() && i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const auto type = ggml_backend_dev_type(dev);
        if (type != GGML_BACKEND_DEVICE_TYPE_CPU && type != GGML_BACKEND_DEVICE_TYPE_ACCEL) {
            devices.push_back(dev);
        }
    }
    if (devices.empty()) {
        devices.push_back(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
    }
    start(endpoint.c_str(), cache_dir.empty() ? nullptr : cache_dir.c_str(), (size_t) n_threads, devices.size(),
          devices.data());
    throw std::runtime_error("the RPC server could not listen on " + endpoint + " (its log says why)");
}

std::string backends_json() {
    std::lock_guard<std::mutex> lock(g_mu);
    common_json unavailable = common_json::object();
    for (const auto & [name, why] : g_state.unavailable) {
        unavailable[name] = why;
    }
    common_json out = common_json::object();
    out["active"] = g_state.active;
    out["cpu_variant"] = g_state.cpu_variant;
    out["unavailable"] = unavailable;
    return out.dump_safe();  // a dlerror() may name a path that is not UTF-8
}

}  // namespace llamahost
