#include "_engine.h"
#include "_backends.h"
#include "exiting_options.h"

#include "server-common.h"
#include "server-context.h"
#include "server-http.h"
#include "server-stream.h"
#include "ui.h"

#include "arg.h"
#include "build-info.h"
#include "common.h"
#include "fit.h"
#include "json-schema-to-grammar.h"
#include "speculative.h"
#include "llama-ext.h"
#include "json.h"
#include "llama.h"
#include "log.h"
#include "mtmd.h"

#include <algorithm>
#include <chrono>
#include <clocale>
#include <cstdlib>
#include <cstdio>
#include <functional>
#include <iterator>
#include <set>
#include <stdexcept>
#include <unordered_set>

// upstream's parser without its exits (patches/0007-parse-without-exit.patch)
bool common_params_parse_in_process(int argc, char ** argv, common_params & params, llama_example ex, std::string & error);
void common_params_print_usage_of(llama_example ex);

// upstream's entry point and our hook into it (patches/0001-server-ready-hook.patch)
int llama_server(common_params & params, int argc, char ** argv);
extern thread_local std::function<void(server_http_context &, server_context &)> llama_server_on_ready;

namespace llamahost {

namespace {

std::once_flag g_init_once;

void init_process() {
    std::call_once(g_init_once, [] {
        std::setlocale(LC_NUMERIC, "C");
        common_init();
        const char * forced = std::getenv("LLAMAHOST_BACKEND");
        load_backends(forced != nullptr ? forced : "");
        llama_backend_init();
    });
}

// How many values each llama-server option takes, and whether its handling ends the process
// (exiting_options.h, generated from upstream's option table at build time).
struct option_shape {
    int n_values;
    bool exits;
};

const std::map<std::string, option_shape> & server_options() {
    static const std::map<std::string, option_shape> shapes = [] {
        const std::set<std::string> exiting(std::begin(LLAMAHOST_EXITING_OPTIONS), std::end(LLAMAHOST_EXITING_OPTIONS));
        common_params params;
        const common_params_context ctx = common_params_parser_init(params, LLAMA_EXAMPLE_SERVER);
        std::map<std::string, option_shape> out;
        for (const common_arg & opt : ctx.options) {
            bool exits = false;
            for (const char * a : opt.args) {
                exits = exits || exiting.count(a) > 0;
            }
            const int n_values = opt.handler_void || opt.handler_bool ? 0 : opt.handler_str_str ? 2 : 1;
            for (const char * a : opt.args) {
                out[a] = {n_values, exits};
            }
            for (const char * a : opt.args_neg) {
                out[a] = {0, exits};
            }
        }
        return out;
    }();
    return shapes;
}

// The first argument that would end the process, walked as upstream's parser walks them; "" if none.
std::string exiting_argument(const std::vector<std::string> & args) {
    const auto & options = server_options();
    for (size_t i = 0; i < args.size(); i++) {
        std::string arg = args[i];
        if (arg.rfind("--", 0) == 0) {
            std::replace(arg.begin(), arg.end(), '_', '-');
        }
        const auto it = options.find(arg);
        if (it == options.end()) {
            return "";  // the parser refuses it, and stops there
        }
        if (it->second.exits) {
            return args[i];
        }
        i += it->second.n_values;
    }
    return "";
}

std::vector<char *> argv_of(std::vector<std::string> & storage) {
    std::vector<char *> argv;
    for (auto & a : storage) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    return argv;
}

// The parser's global state (the log threshold it sets) is not shared safely between threads.
std::mutex g_parse_mu;

struct parse_result {
    bool ok = false;
    std::string message;
};

// Whether a command line names RPC workers, which upstream's parser connects to as it reads them.
bool names_rpc_workers(const std::vector<std::string> & args) {
    const char * env = std::getenv("LLAMA_ARG_RPC");
    return (env != nullptr && *env != '\0') ||
           std::any_of(args.begin(), args.end(), [](const std::string & a) { return a == "--rpc" || a.rfind("--rpc=", 0) == 0; });
}

// Upstream's parser, minus the ways it ends the process (patches/0007): options that print and
// exit are refused first, and any error comes back as text; nothing touches the process's stderr.
// RPC workers only where the caller checked them (connect_rpc): upstream's parser connects to
// each and ends the process where one cannot be reached or speaks another protocol version.
parse_result parse_into(const std::vector<std::string> & args, common_params & params, bool connect_rpc) {
    init_process();
    parse_result out;
    const std::string exiting = exiting_argument(args);
    if (!exiting.empty()) {
        out.message = exiting + " prints and exits: it cannot start a server in this process";
        return out;
    }
    if (!connect_rpc && names_rpc_workers(args)) {
        out.message = "--rpc: RPC workers are not read here (llama.cpp would connect to them, and end this process "
                      "where one cannot be used); llamahost checks them first where a server or an estimate uses them";
        return out;
    }
    std::vector<std::string> storage{"llama-server"};
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char *> argv = argv_of(storage);
    {
        std::lock_guard<std::mutex> lock(g_parse_mu);
        out.ok = common_params_parse_in_process((int) storage.size(), argv.data(), params, LLAMA_EXAMPLE_SERVER,
                                                out.message);
    }
    while (!out.message.empty() && (out.message.back() == '\n' || out.message.back() == ' ')) {
        out.message.pop_back();
    }
    if (!out.ok && out.message.empty()) {
        out.message = "invalid llama-server arguments";
    }
    return out;
}

// "/slots/:id_slot" matches "/slots/0" with params["id_slot"] = "0"
bool match_route(const std::string & pattern, const std::string & path, std::map<std::string, std::string> & params) {
    size_t i = 0, j = 0;
    std::map<std::string, std::string> found;
    while (i < pattern.size() && j < path.size()) {
        if (pattern[i] == ':') {
            size_t pe = pattern.find('/', i);
            size_t se = path.find('/', j);
            if (pe == std::string::npos) pe = pattern.size();
            if (se == std::string::npos) se = path.size();
            if (se == j) {
                return false;
            }
            found[pattern.substr(i + 1, pe - i - 1)] = path.substr(j, se - j);
            i = pe;
            j = se;
        } else if (pattern[i] == path[j]) {
            i++;
            j++;
        } else {
            return false;
        }
    }
    if (i != pattern.size() || j != path.size()) {
        return false;
    }
    for (auto & kv : found) {
        params[kv.first] = kv.second;
    }
    return true;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string url_decode(const std::string & in) {
    std::string out;
    for (size_t i = 0; i < in.size(); i++) {
        if (in[i] == '+') {
            out.push_back(' ');
        } else if (in[i] == '%' && i + 2 < in.size() && hex_value(in[i + 1]) >= 0 && hex_value(in[i + 2]) >= 0) {
            out.push_back((char) (hex_value(in[i + 1]) * 16 + hex_value(in[i + 2])));
            i += 2;
        } else {
            out.push_back(in[i]);
        }
    }
    return out;
}

void parse_query(const std::string & query, std::map<std::string, std::string> & params) {
    size_t start = 0;
    while (start < query.size()) {
        size_t end = query.find('&', start);
        if (end == std::string::npos) end = query.size();
        const std::string pair = query.substr(start, end - start);
        const size_t eq = pair.find('=');
        if (!pair.empty()) {
            params[url_decode(pair.substr(0, eq))] = eq == std::string::npos ? "" : url_decode(pair.substr(eq + 1));
        }
        start = end + 1;
    }
}

bool has_offload_device() {
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        const auto type = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            return true;
        }
    }
    return false;
}

common_json memory_entry(const char * name, const char * description, int64_t total, int64_t free,
                         size_t model, size_t context, size_t compute) {
    common_json d = common_json::object();
    d["name"] = name;
    d["description"] = description;
    d["total"] = total;
    d["free"] = free;
    d["model"] = (uint64_t) model;
    d["context"] = (uint64_t) context;
    d["compute"] = (uint64_t) compute;
    return d;
}

// Bytes a context holds, per device and on the host. CPU buffers that are not host buffers
// (repacked weights) count on the host. A dry run reads without mmap; for a load that maps
// the file, the mapping still spans the repacked tensors, so `mapped` counts them once more.
common_json context_memory(const llama_context * ctx, bool mapped) {
    const llama_model * model = llama_get_model(ctx);
    const int32_t n_dev = llama_model_n_devices(model);
    std::vector<llama_memory_breakdown_data> per_dev(n_dev);
    llama_memory_breakdown_data host;
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        llama_memory_breakdown_data * target = &host;
        if (!ggml_backend_buft_is_host(buft)) {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            for (int32_t i = 0; i < n_dev; i++) {
                if (dev != nullptr && dev == llama_model_get_device(model, i)) {
                    target = &per_dev[i];
                }
            }
            if (target == &host && mapped) {
                host.model += mb.model;
            }
        }
        target->model += mb.model;
        target->context += mb.context;
        target->compute += mb.compute;
    }
    common_json devices = common_json::array();
    for (int32_t i = 0; i < n_dev; i++) {
        ggml_backend_dev_t dev = llama_model_get_device(model, i);
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        devices.push_back(memory_entry(ggml_backend_dev_name(dev), ggml_backend_dev_description(dev), total, free,
                                       per_dev[i].model, per_dev[i].context, per_dev[i].compute));
    }
    size_t free = 0, total = 0;
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu != nullptr) {
        ggml_backend_dev_memory(cpu, &free, &total);
    }
    common_json out = common_json::object();
    out["devices"] = devices;
    out["host"] = memory_entry("host", "system memory", total, free, host.model, host.context, host.compute);
    out["n_layers"] = llama_model_n_layer(model);
    out["n_ctx_train"] = llama_model_n_ctx_train(model);
    out["n_expert"] = llama_model_n_expert(model);
    out["n_ctx"] = llama_n_ctx(ctx);
    out["n_seq"] = llama_n_seq_max(ctx);
    return out;
}

}  // namespace

// Ends a direct call counted in active_calls_; stop() waits until none is left.
struct engine::call_scope {
    engine & e;
    explicit call_scope(engine & owner) : e(owner) {}
    ~call_scope() {
        std::lock_guard<std::mutex> lock(e.mu_);
        e.active_calls_--;
        e.cv_.notify_all();
    }
};

// One direct call: the request, its cancellation flag and (for a stream) the response.
struct stream_state {
    std::atomic<bool> cancelled{false};
    std::function<bool()> should_stop;
    std::unique_ptr<server_http_req> req;
    server_http_res_ptr res;
    std::mutex mu;
};

engine::engine(const std::vector<std::string> & args) : params_(std::make_unique<common_params>()) {
    parse_result parsed = parse_into(args, *params_, true);  // Server checked its workers (engine/server.py)
    if (!parsed.ok) {
        throw std::invalid_argument(parsed.message);
    }
    if (params_->model.path.empty()) {
        throw std::invalid_argument("no model given (-m PATH): router mode is not run in-process");
    }
    if (!params_->cors_origins_explicit) {
        // pages served from this machine may call it (as upstream allows when tools are on); other
        // origins only when --cors-origins names them (patches/0003: an empty list turns CORS off)
        params_->cors_origins = "localhost";
    }
    params_->load_progress_callback = [](float, void * self) -> bool {
        return !static_cast<engine *>(self)->stopping_.load();
    };
    params_->load_progress_callback_user_data = this;
}

engine::~engine() {
    stop();
}

void engine::run() {
    llama_server_on_ready = [this](server_http_context & http, server_context & server) {
        // on the server's own thread, before its loop starts: the one safe moment to read the context
        const llama_context * ctx = server.get_llama_context();
        std::string breakdown = ctx ? context_memory(ctx, false).dump() : "";
        std::lock_guard<std::mutex> lock(mu_);
        memory_json_ = std::move(breakdown);
        http_ = &http;
        server_ = &server;
        port_ = http.port;
        ready_ = true;
        cv_.notify_all();
    };
    server_stream_session_manager_start();
    int rc = 1;
    try {
        fit_before_load();
        rc = llama_server(*params_, 0, nullptr);
    } catch (const std::exception & e) {
        LOG_ERR("%s: %s\n", __func__, e.what());
    }
    llama_server_on_ready = nullptr;
    common_log_flush(common_log_main());

    std::lock_guard<std::mutex> lock(mu_);
    exit_code_ = rc;
    http_ = nullptr;
    server_ = nullptr;
    finished_ = true;
    cv_.notify_all();
}

void engine::start() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (thread_.joinable() || stopping_) {
            throw std::runtime_error("this server was already started");
        }
        thread_ = std::thread([this] { run(); });
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return ready_.load() || finished_.load(); });
    if (ready_ && !finished_) {
        return;
    }
    const bool interrupted = stopping_.load();
    const int rc = exit_code_;
    // joined under mu_ (the finished thread needs it no more): stop() may be joining it too
    if (thread_.joinable()) {
        thread_.join();
    }
    lock.unlock();
    if (interrupted) {
        throw std::runtime_error("the server was closed while the model was loading");
    }
    throw std::runtime_error("llama.cpp could not load the model or start the HTTP server (llama_server exited with " +
                             std::to_string(rc) + "); its log above says why");
}

std::string engine::memory_breakdown() const {
    std::lock_guard<std::mutex> lock(mu_);
    return memory_json_;
}

std::vector<std::string> engine::routes() const {
    std::vector<std::string> out;
    std::lock_guard<std::mutex> lock(mu_);
    if (http_ != nullptr) {
        for (const auto & kv : http_->handlers) {
            out.push_back(kv.first);
        }
    }
    return out;
}

reply engine::call(const std::string & method, const std::string & target, const std::string & body) {
    if (method != "GET" && method != "POST" && method != "DELETE") {
        throw std::invalid_argument("unsupported HTTP method: " + method);
    }
    const size_t qpos = target.find('?');
    const std::string path = target.substr(0, qpos);
    const std::string query = qpos == std::string::npos ? "" : target.substr(qpos + 1);

    auto state = std::make_shared<stream_state>();
    server_http_context::handler_t handler;
    std::map<std::string, std::string> params;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (!ready_ || finished_ || stopping_) {
            throw std::runtime_error("the server is not running");
        }
        auto it = http_->handlers.find(path);
        if (it != http_->handlers.end()) {
            handler = it->second;
        } else {
            for (const auto & kv : http_->handlers) {
                if (kv.first.find(':') != std::string::npos && match_route(kv.first, path, params)) {
                    handler = kv.second;
                    break;
                }
            }
        }
        if (!handler) {
            const std::string & prefix = params_->api_prefix;
            if (method == "GET" && params_->ui && params_->public_path.empty() && path.rfind(prefix + "/", 0) == 0) {
                return ui_asset(path.substr(prefix.size() + 1), true, "");  // what a browser's GET gets
            }
            throw std::out_of_range("no such route: " + path);
        }
        active_calls_++;  // released by call_scope
    }
    const call_scope scope(*this);

    parse_query(query, params);
    stream_state * raw = state.get();
    state->should_stop = [this, raw] { return stopping_.load() || raw->cancelled.load(); };
    state->req = std::make_unique<server_http_req>(server_http_req{
        params, {}, path, query, body, {}, state->should_stop});
    state->res = handler(*state->req);

    reply out;
    out.status = state->res->status;
    out.content_type = state->res->content_type;
    out.headers = state->res->headers;
    if (!state->res->is_stream()) {
        out.body = std::move(state->res->data);
        state->res->on_complete();
        return out;
    }
    std::lock_guard<std::mutex> lock(mu_);
    out.stream_id = next_stream_id_++;
    streams_[out.stream_id] = state;
    return out;
}

std::shared_ptr<stream_state> engine::find_stream(uint64_t id) {
    // caller holds mu_
    auto it = streams_.find(id);
    if (it == streams_.end()) {
        if (stopping_ || finished_) {
            throw std::runtime_error("the server was closed while this stream was open");
        }
        throw std::out_of_range("no such stream (already finished or closed)");
    }
    return it->second;
}

bool engine::next_chunk(uint64_t stream_id, std::string & chunk) {
    std::shared_ptr<stream_state> state;
    {
        std::lock_guard<std::mutex> lock(mu_);
        state = find_stream(stream_id);
        if (stopping_) {
            throw std::runtime_error("the server was closed while this stream was open");
        }
        active_calls_++;  // released by call_scope
    }
    const call_scope scope(*this);

    std::lock_guard<std::mutex> stream_lock(state->mu);
    if (!state->res) {
        throw std::runtime_error("the server was closed while this stream was open");
    }
    chunk.clear();
    const bool more = state->res->next(chunk);
    if (stopping_) {
        throw std::runtime_error("the server was closed while this stream was open");
    }
    if (!more) {
        state->res->on_complete();
        state->res.reset();
        state->req.reset();
        std::lock_guard<std::mutex> lock(mu_);
        streams_.erase(stream_id);
    }
    return more;
}

void engine::close_stream(uint64_t stream_id) {
    std::shared_ptr<stream_state> state;
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = streams_.find(stream_id);
        if (it == streams_.end()) {
            return;
        }
        state = it->second;
        streams_.erase(it);
        active_calls_++;  // the response's destructor still talks to the server: stop() must wait for it
    }
    const call_scope scope(*this);
    state->cancelled = true;
    std::lock_guard<std::mutex> stream_lock(state->mu);
    // the reader inside the response cancels its tasks when destroyed
    state->res.reset();
    state->req.reset();
}

void engine::stop() {
    stopping_ = true;
    std::unique_lock<std::mutex> lock(mu_);
    // direct calls see should_stop() and return within the engine's polling interval
    cv_.wait(lock, [this] { return active_calls_ == 0; });
    for (auto & kv : streams_) {
        std::lock_guard<std::mutex> stream_lock(kv.second->mu);
        kv.second->res.reset();
        kv.second->req.reset();
    }
    streams_.clear();
    // a terminate() that lands before the task loop has started is lost, so repeat it
    while (thread_.joinable() && !finished_) {
        if (server_ != nullptr) {
            server_->terminate();
        }
        cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return finished_.load(); });
    }
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
        thread_.join();  // under mu_, as in start(): the two may run at once
    }
}

reply ui_asset(const std::string & name, bool accepts_gzip, const std::string & if_none_match) {
    // as upstream's HTTP layer serves its embedded UI (tools/server/server-http.cpp)
    static const std::unordered_set<std::string> no_cache = {"sw.js", "manifest.webmanifest", "_app/version.json",
                                                             "build.json"};
    const std::string asset = name.empty() ? "index.html" : name;
    const llama_ui_asset * a = llama_ui_find_asset(asset);
    reply out;
    if (a == nullptr) {
        out.status = 404;
        out.content_type = "application/json; charset=utf-8";
        out.body = R"({"error":{"code":404,"message":"File Not Found","type":"not_found_error"}})";
        return out;
    }
    if (llama_ui_use_gzip() && !accepts_gzip) {
        out.status = 415;
        out.content_type = "text/plain";
        out.body = "Error: gzip is not supported by this browser";
        return out;
    }
    if (llama_ui_use_gzip()) {
        out.headers["Content-Encoding"] = "gzip";
    }
    out.status = 200;
    out.content_type = a->type;
    if (no_cache.count(asset)) {
        out.headers["Cache-Control"] = "no-cache";
    } else {
        out.headers["ETag"] = a->etag;
        if (!if_none_match.empty() && (if_none_match == a->etag || if_none_match == "W/" + a->etag)) {
            out.status = 304;
            out.headers.erase("Content-Encoding");
            return out;
        }
        out.headers["Cache-Control"] = asset == "index.html" ? "no-cache" : "public, max-age=31536000, immutable";
        if (asset == "index.html") {
            out.headers["Cross-Origin-Embedder-Policy"] = "require-corp";
            out.headers["Cross-Origin-Opener-Policy"] = "same-origin";
        }
    }
    out.body.assign(reinterpret_cast<const char *>(a->data), a->size);
    return out;
}

std::string devices_json() {
    init_process();
    common_json out = common_json::array();
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        const char * type = "unknown";
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU:   type = "cpu";   break;
            case GGML_BACKEND_DEVICE_TYPE_GPU:   type = "gpu";   break;
            case GGML_BACKEND_DEVICE_TYPE_IGPU:  type = "igpu";  break;
            case GGML_BACKEND_DEVICE_TYPE_ACCEL: type = "accel"; break;
            default: break;
        }
        common_json d = common_json::object();
        d["name"] = ggml_backend_dev_name(dev);
        d["description"] = ggml_backend_dev_description(dev);
        d["type"] = type;
        d["backend"] = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        d["memory_total"] = (uint64_t) total;
        d["memory_free"] = (uint64_t) free;
        out.push_back(d);
    }
    return out.dump();
}

std::string system_info_json() {
    init_process();
    common_json backends = common_json::array();
    common_json features = common_json::object();
    for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        backends.push_back(ggml_backend_reg_name(reg));
        auto get_features = (ggml_backend_get_features_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features");
        if (get_features == nullptr) {
            continue;
        }
        common_json reg_features = common_json::object();
        for (ggml_backend_feature * f = get_features(reg); f->name != nullptr; f++) {
            reg_features[f->name] = f->value;
        }
        features[ggml_backend_reg_name(reg)] = reg_features;
    }
    common_json out = common_json::object();
    out["llama_cpp_build"] = llama_build_number();
    out["llama_cpp_commit"] = llama_commit();
    out["compiler"] = llama_compiler();
    out["build_target"] = llama_build_target();
    out["backends"] = backends;
    out["features"] = features;
    out["system_info"] = llama_print_system_info();
    return out.dump();
}

namespace {

// The parameters a server load with these arguments uses, resolved as llama_server() and
// server_context::load_model() resolve them, before any fitting to device memory. Built in
// place and never copied: mparams points into params (its tensor split and overrides).
struct load_params {
    common_params params;
    llama_model_params mparams;
    llama_context_params cparams;
    bool mapped;  // weights mmapped: repacked tensors then count in the mapping too

    explicit load_params(common_params given) : params(std::move(given)) {
        if (params.embedding && params.n_batch > params.n_ubatch) {  // as llama_server() does
            params.n_batch = params.n_ubatch;
        }
        if (params.n_parallel < 0) {  // "auto", resolved as llama_server() does
            params.n_parallel = 4;
            params.kv_unified = true;
        }
        if (params.kv_unified_per_slot > 0 && params.n_ctx == 0 &&
            (uint32_t) params.fit_params_min_ctx != UINT32_MAX) {  // llama_server()'s pool sizing
            params.n_ctx = params.n_parallel * params.kv_unified_per_slot;
        }
        {
            // outputs limited as server_context::load_model() does (server_output_limits, server-context.cpp)
            const bool pooled = params.embedding || (params.pooling_type != LLAMA_POOLING_TYPE_UNSPECIFIED &&
                                                     params.pooling_type != LLAMA_POOLING_TYPE_NONE);
            common_speculative_output_limits limits = pooled ? common_speculative_output_limits{params.n_batch, 1}
                : common_speculative_get_output_limits(params.n_batch, params.n_parallel,
                                                       common_speculative_n_max(&params.speculative));
            params.n_outputs_max = std::max<int32_t>(1, limits.total);
            params.n_outputs_max_per_seq = std::max<int32_t>(1, limits.per_seq);
        }
        mparams = common_model_params_to_llama(params);
        cparams = common_context_params_to_llama(params);
        mapped = mparams.load_mode == LLAMA_LOAD_MODE_AUTO || mparams.load_mode == LLAMA_LOAD_MODE_MMAP ||
                 mparams.load_mode == LLAMA_LOAD_MODE_MMAP_MLOCK;
    }
    load_params(const load_params &) = delete;
    load_params & operator=(const load_params &) = delete;
};

std::unique_ptr<load_params> resolve_load_params(const std::vector<std::string> & args, bool connect_rpc) {
    common_params params;
    parse_result parsed = parse_into(args, params, connect_rpc);
    if (!parsed.ok) {
        throw std::invalid_argument(parsed.message);
    }
    return std::make_unique<load_params>(std::move(params));
}

}  // namespace

std::string load_params_json(const std::vector<std::string> & args) {
    init_process();
    const auto resolved = resolve_load_params(args, false);
    const load_params & lp = *resolved;
    const llama_context_params & c = lp.cparams;
    common_json out = common_json::object();
    out["n_ctx"] = c.n_ctx;
    out["n_batch"] = c.n_batch;
    out["n_ubatch"] = c.n_ubatch;
    out["n_seq_max"] = c.n_seq_max;
    out["n_outputs_max"] = lp.params.n_outputs_max;
    out["kv_unified"] = c.kv_unified;
    out["swa_full"] = c.swa_full;
    out["type_k"] = ggml_type_name(c.type_k);
    out["type_v"] = ggml_type_name(c.type_v);
    out["flash_attn"] = llama_flash_attn_type_name(c.flash_attn_type);
    out["embeddings"] = c.embeddings;
    out["mapped"] = lp.mapped;
    out["n_gpu_layers"] = lp.mparams.n_gpu_layers;
    out["model"] = lp.params.model.path;
    out["hosts"] = lp.params.hostnames;
    out["api_keys"] = lp.params.api_keys;
    out["cache_ram_mib"] = lp.params.cache_ram_mib;
    return out.dump();
}

namespace {

// The projector's context parameters, as server_context::load_model() sets them (server-context.cpp).
mtmd_context_params projector_params(const common_params & params) {
    mtmd_context_params mparams = mtmd_context_params_default();
    mparams.use_gpu          = params.mmproj_use_gpu;
    mparams.device           = params.mmproj_device;
    mparams.print_timings    = false;
    mparams.n_threads        = params.cpuparams.n_threads;
    mparams.flash_attn_type  = params.flash_attn_type;
    mparams.warmup           = params.warmup;
    mparams.image_min_tokens = params.image_min_tokens;
    mparams.image_max_tokens = params.image_max_tokens;
    mparams.batch_max_tokens = params.mtmd_batch_max_tokens;
    mparams.media_marker     = get_media_marker();
    return mparams;
}

// A model and context created with nothing allocated: what they would hold, per device and on the host.
common_json dry_load(const std::string & path, llama_model_params mparams, const llama_context_params & cparams,
                     bool mapped, const char * what) {
    mparams.no_alloc = true;
    mparams.load_mode = LLAMA_LOAD_MODE_NONE;
    std::unique_ptr<llama_model, decltype(&llama_model_free)> model(
        llama_model_load_from_file(path.c_str(), mparams), &llama_model_free);
    if (!model) {
        throw std::runtime_error(std::string("llama.cpp could not read the ") + what);
    }
    std::unique_ptr<llama_context, decltype(&llama_free)> ctx(llama_init_from_model(model.get(), cparams), &llama_free);
    if (!ctx) {
        throw std::runtime_error(std::string("llama.cpp could not create a context for the ") + what +
                                 " with these parameters");
    }
    return context_memory(ctx.get(), mapped);
}

}  // namespace

namespace {

// The draft model's parameters, derived from the main model's as common_init_result() derives them
// (common.cpp). Built in place: mparams points into params.
struct draft_params {
    const bool has;  // a draft model of its own
    const bool mtp;  // multi-token prediction: a context of its own on the main model's weights
    common_params params;
    llama_model_params mparams;
    llama_context_params cparams;

    explicit draft_params(const common_params & main)
        : has(main.speculative.has_dft()),
          mtp(std::find(main.speculative.types.begin(), main.speculative.types.end(),
                        COMMON_SPECULATIVE_TYPE_DRAFT_MTP) != main.speculative.types.end()),
          params(common_base_params_to_speculative(main)),
          mparams(common_model_params_to_llama(params)),
          cparams(common_context_params_to_llama(params)) {
        if (mtp) {
            cparams.ctx_type = LLAMA_CONTEXT_TYPE_MTP;
        }
        cparams.n_rs_seq = 0;
    }
    draft_params(const draft_params &) = delete;
    draft_params & operator=(const draft_params &) = delete;
};

// Whether upstream's fitting could change anything: it sets only what was left unset, the
// context size, and (where there is a GPU) the GPU layers and their split (fit.cpp).
bool fit_may_change(const load_params & lp) {
    if (!lp.params.fit_params) {
        return false;
    }
    const bool ctx_given = lp.cparams.n_ctx != 0;
    const bool layers_given = lp.mparams.n_gpu_layers != llama_model_default_params().n_gpu_layers;
    return !(ctx_given && (!has_offload_device() || layers_given));
}

// The projector's memory per device, added to the fitting's margins as server_context::load_model() adds it.
auto reserve_projector(common_params & params) {
    auto usage = mtmd_get_memory_usage(params.mmproj.path.c_str(), projector_params(params));
    for (const auto & [dev, size] : usage) {
        for (size_t i = 0; i < ggml_backend_dev_count() && i < params.fit_params_target.size(); i++) {
            if (ggml_backend_dev_get(i) == dev) {
                params.fit_params_target[i] += size;
            }
        }
    }
    return usage;
}

// Upstream's fitting, as a load runs it (common_init_result): lp's and draft's parameters are
// set as the load would set them. What it chose, with whether those choices can be given as
// options (-c, -ngl, -ts) and so reproduce the load without fitting again: not where it moved
// tensors of a mixture of experts to the host (buffer overrides).
common_json fit_as_a_load(load_params & lp, draft_params & draft) {
    common_params & params = lp.params;
    const auto overrides = [&params] {
        return std::count_if(params.tensor_buft_overrides.begin(), params.tensor_buft_overrides.end(),
                             [](const llama_model_tensor_buft_override & o) { return o.pattern != nullptr; });
    };
    const auto overrides_before = overrides();
    const common_fit_extra_model extra = {draft.params.model.path.c_str(), &draft.mparams, &draft.cparams, !draft.has};
    common_params_fit_status status;
    {
        static std::mutex fit_mu;  // not reentrant: it swaps the global llama logger
        std::lock_guard<std::mutex> lock(fit_mu);
        status = common_fit_params(params.model.path.c_str(), &lp.mparams, &lp.cparams, params.tensor_split,
            params.tensor_buft_overrides.data(), params.fit_params_target.data(), params.fit_params_min_ctx,
            draft.has || draft.mtp ? &extra : nullptr,
            params.verbosity >= LOG_LEVEL_DEBUG ? GGML_LOG_LEVEL_DEBUG : GGML_LOG_LEVEL_ERROR);
    }
    common_json split = common_json::array();
    for (size_t i = 0; i < ggml_backend_dev_count() && i < llama_max_devices(); i++) {
        split.push_back(params.tensor_split[i]);
    }
    common_json free = common_json::object();
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        size_t dev_free = 0, dev_total = 0;
        ggml_backend_dev_memory(ggml_backend_dev_get(i), &dev_free, &dev_total);
        free[ggml_backend_dev_name(ggml_backend_dev_get(i))] = dev_free;
    }
    return {{"status", status == COMMON_PARAMS_FIT_STATUS_SUCCESS ? "fits"
                       : status == COMMON_PARAMS_FIT_STATUS_FAILURE ? "does not fit" : "error"},
            {"n_ctx", lp.cparams.n_ctx}, {"n_gpu_layers", lp.mparams.n_gpu_layers}, {"tensor_split", split},
            {"as_options", status != COMMON_PARAMS_FIT_STATUS_ERROR && overrides() == overrides_before},
            {"free", free}};
}

}  // namespace

std::string memory_estimate_json(const std::vector<std::string> & args, bool connect_rpc) {
    const auto resolved = resolve_load_params(args, connect_rpc);
    load_params & lp = *resolved;
    common_params & params = lp.params;

    // the projector, measured as a server load measures it before fitting (server-context.cpp)
    common_json projector = common_json::array();
    if (!params.mmproj.path.empty()) {
        const auto usage = reserve_projector(params);
        if (usage.empty()) {
            throw std::runtime_error("llama.cpp could not read the projector " + params.mmproj.path);
        }
        for (const auto & [dev, size] : usage) {
            const bool host = ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
            projector.push_back({{"name", host ? "host" : ggml_backend_dev_name(dev)}, {"bytes", (uint64_t) size}});
        }
    }

    draft_params draft(params);
    std::string fit_status = "not needed";
    common_json fitted = nullptr;
    if (fit_may_change(lp)) {
        fitted = fit_as_a_load(lp, draft);
        fit_status = fitted["status"];
        if (fit_status == "error") {
            throw std::runtime_error("llama.cpp could not read the model to fit it");
        }
    }

    common_json out = dry_load(params.model.path, lp.mparams, lp.cparams, lp.mapped, "model");
    out["n_gpu_layers"] = lp.mparams.n_gpu_layers;
    out["fit_status"] = fit_status;
    out["fitted"] = fitted;
    out["projector"] = projector;
    if (draft.has) {
        out["draft"] = dry_load(draft.params.model.path, draft.mparams, draft.cparams, lp.mapped, "draft model");
    }
    common_json loras = common_json::array();
    for (const auto & lora : params.lora_adapters) {
        loras.push_back(lora.path);
    }
    out["lora"] = loras;
    out["cache_ram_mib"] = params.cache_ram_mib;
    return out.dump();
}

// Upstream's fitting, run here as the load would run it, its choices then given to the load
// (which fits no more): what it chose is known (fitted()), and can be given next time.
void engine::fit_before_load() {
    load_params lp(*params_);
    if (!fit_may_change(lp)) {
        return;
    }
    if (!lp.params.mmproj.path.empty()) {
        reserve_projector(lp.params);  // a projector it cannot read fails the load as before, after the fitting
    }
    draft_params draft(lp.params);
    common_json fitted = fit_as_a_load(lp, draft);
    params_->n_ctx = (int32_t) lp.cparams.n_ctx;
    params_->n_gpu_layers = lp.mparams.n_gpu_layers;
    std::copy(lp.params.tensor_split, lp.params.tensor_split + llama_max_devices(), params_->tensor_split);
    params_->tensor_buft_overrides = lp.params.tensor_buft_overrides;
    params_->fit_params = false;
    std::lock_guard<std::mutex> lock(mu_);
    fitted_json_ = fitted.dump();
}

std::string engine::fitted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fitted_json_;
}

struct chat_vocab::impl {
    std::unique_ptr<llama_model, decltype(&llama_model_free)> model{nullptr, &llama_model_free};
    server_chat_params chat_params;
};

chat_vocab::chat_vocab(const std::vector<std::string> & args) : impl_(std::make_unique<impl>()) {
    common_params params;
    parse_result parsed = parse_into(args, params, false);
    if (!parsed.ok) {
        throw std::invalid_argument(parsed.message);
    }
    llama_model_params mparams = common_model_params_to_llama(params);
    mparams.vocab_only = true;
    impl_->model.reset(llama_model_load_from_file(params.model.path.c_str(), mparams));
    if (!impl_->model) {
        throw std::runtime_error("llama.cpp could not read the vocabulary of " + params.model.path);
    }
    // as server_context::load_model() fills its chat parameters (server-context.cpp)
    common_chat_templates_ptr templates;
    try {
        templates = common_chat_templates_init(impl_->model.get(), params.chat_template);
    } catch (const std::exception & e) {
        throw std::runtime_error(std::string("chat template parsing error: ") + e.what());
    }
    const bool supports_thinking = params.use_jinja && common_chat_templates_support_enable_thinking(templates.get());
    impl_->chat_params = {
        /* use_jinja             */ params.use_jinja,
        /* prefill_assistant     */ params.prefill_assistant,
        /* reasoning_format      */ params.reasoning_format,
        /* chat_template_kwargs  */ params.default_template_kwargs,
        /* tmpls                 */ std::move(templates),
        /* allow_image           */ false,
        /* allow_audio           */ false,
        /* allow_video           */ false,
        /* enable_thinking       */ params.enable_reasoning != 0 && supports_thinking,
        /* reasoning_budget      */ params.sampling.reasoning_budget_tokens,
        /* reasoning_budget_msg  */ params.sampling.reasoning_budget_message,
        /* media_path            */ params.media_path,
        /* force_pure_content    */ params.force_pure_content_parser
    };
}

chat_vocab::~chat_vocab() = default;

std::string chat_vocab::apply(const std::string & body) const {
    json request;
    try {
        request = json::parse(body);
    } catch (const std::exception & e) {
        throw std::invalid_argument(std::string("the request is not JSON: ") + e.what());
    }
    std::vector<raw_buffer> files;
    // as server_routes::handle_count_tokens() (server-context.cpp), for a model without a projector
    const json parsed = oaicompat_chat_params_parse(request, impl_->chat_params, files);
    const json & prompt = parsed.at("prompt");
    const llama_vocab * vocab = llama_model_get_vocab(impl_->model.get());
    json out = json::object();
    out["prompt"] = prompt;
    out["n_tokens"] = tokenize_mixed(vocab, prompt, true, true).size();
    return out.dump();
}

std::vector<int32_t> chat_vocab::tokenize(const std::string & content, bool add_special, bool parse_special) const {
    json prompt;
    try {
        prompt = json::parse(content);
    } catch (const std::exception & e) {
        throw std::invalid_argument(std::string("the content is not JSON: ") + e.what());
    }
    // as server_routes::post_tokenize (server-context.cpp)
    return tokenize_mixed(llama_model_get_vocab(impl_->model.get()), prompt, add_special, parse_special);
}

std::string chat_vocab::caps() const {
    return json(common_chat_templates_get_caps(impl_->chat_params.tmpls.get())).dump();
}

std::string json_schema_grammar(const std::string & schema) {
    common_json parsed;
    try {
        parsed = common_json::parse(schema);
    } catch (const std::exception & e) {
        throw std::invalid_argument(std::string("the schema is not JSON: ") + e.what());
    }
    return json_schema_to_grammar(parsed, true);
}

std::string options_json() {
    init_process();
    common_params params;
    common_params_context ctx = common_params_parser_init(params, LLAMA_EXAMPLE_SERVER);
    common_json out = common_json::array();
    for (const common_arg & opt : ctx.options) {
        if (opt.is_preset_only) {
            continue;
        }
        common_json o = common_json::object();
        common_json args = common_json::array();
        for (const char * a : opt.args) args.push_back(a);
        common_json args_neg = common_json::array();
        for (const char * a : opt.args_neg) args_neg.push_back(a);
        o["args"] = args;
        o["args_neg"] = args_neg;
        o["value_hint"] = opt.value_hint ? opt.value_hint : "";
        o["value_hint_2"] = opt.value_hint_2 ? opt.value_hint_2 : "";
        o["env"] = opt.env ? opt.env : "";
        o["help"] = opt.help;
        o["kind"] = opt.handler_void ? "flag" : opt.handler_bool ? "bool" : opt.handler_int ? "int"
                  : opt.handler_str_str ? "pair" : "string";
        o["exits"] = server_options().at(opt.args.front()).exits;
        out.push_back(o);
    }
    return out.dump();
}

void print_usage() {
    init_process();
    common_params_print_usage_of(LLAMA_EXAMPLE_SERVER);
    std::fflush(stdout);
}

void parse_and_exit(const std::vector<std::string> & args) {
    init_process();
    std::vector<std::string> storage{"llama-server"};
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char *> argv = argv_of(storage);
    common_params params;
    std::exit(common_params_parse((int) storage.size(), argv.data(), params, LLAMA_EXAMPLE_SERVER) ? 0 : 1);
}

}  // namespace llamahost
