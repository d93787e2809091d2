// The in-process llama.cpp server: upstream's llama_server() on a thread of its own,
// plus direct (HTTP-free) calls into the very handlers its HTTP routes use.
// Knows nothing of Python; the Cython layer only converts types and releases the GIL.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct common_params;
struct server_http_context;
struct server_context;

namespace llamahost {

// The answer of one route: a whole body, or (stream_id != 0) chunks read by next_chunk().
struct reply {
    int status = 0;
    std::string content_type;
    std::string body;
    std::map<std::string, std::string> headers;
    uint64_t stream_id = 0;
};

struct stream_state;

class engine {
public:
    // args: llama-server's command line without the program name, parsed by upstream's
    // own parser. Throws std::invalid_argument when the parser rejects them.
    explicit engine(const std::vector<std::string> & args);
    ~engine();

    engine(const engine &) = delete;
    engine & operator=(const engine &) = delete;

    // Loads the model and starts serving; blocks until ready.
    // Throws std::runtime_error when loading or binding fails, or when stop() interrupts it.
    void start();

    // Calls the route's handler directly. Throws std::out_of_range for an unknown route,
    // std::runtime_error when the server is not running.
    reply call(const std::string & method, const std::string & path, const std::string & body);

    // Next chunk of a stream; false once the stream has ended (chunk may still hold the last data).
    // Throws std::runtime_error when the server was stopped while the stream was open.
    bool next_chunk(uint64_t stream_id, std::string & chunk);
    // Ends a stream early; the generation behind it is cancelled.
    void close_stream(uint64_t stream_id);

    // Stops serving and frees the model. Safe to call at any time, more than once, from any thread.
    void stop();

    int port() const { return port_; }
    bool running() const { return ready_.load() && !finished_.load(); }
    std::vector<std::string> routes() const;
    // JSON: what the loaded model and context really hold, per device and on the host
    std::string memory_breakdown() const;
    // JSON: what upstream's fitting chose before the load ("" when it could change nothing and did not run)
    std::string fitted() const;

private:
    struct call_scope;
    void run();
    void fit_before_load();
    std::shared_ptr<stream_state> find_stream(uint64_t id);

    std::unique_ptr<common_params> params_;
    std::thread thread_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    server_http_context * http_ = nullptr;     // valid while ready_ && !finished_
    server_context * server_ = nullptr;
    std::atomic<bool> ready_{false};
    std::atomic<bool> finished_{false};
    std::atomic<bool> stopping_{false};
    int exit_code_ = 0;
    std::string memory_json_;
    std::string fitted_json_;
    int port_ = 0;

    // direct calls in flight; stop() waits for them before the server objects go away
    int active_calls_ = 0;
    uint64_t next_stream_id_ = 1;
    std::map<uint64_t, std::shared_ptr<stream_state>> streams_;
    std::function<bool()> should_stop_;
};

// A model's vocabulary and chat templates, loaded without its weights (vocab_only): what the
// server's own chat parsing makes of a request, and its token count, without a server.
class chat_vocab {
public:
    // args: llama-server's command line (the model and the template options: --chat-template-file,
    // --jinja, --reasoning-format, ...). Throws std::invalid_argument when the parser rejects them,
    // std::runtime_error when the vocabulary or the chat template cannot be read.
    explicit chat_vocab(const std::vector<std::string> & args);
    ~chat_vocab();

    chat_vocab(const chat_vocab &) = delete;
    chat_vocab & operator=(const chat_vocab &) = delete;

    // body: an OpenAI chat request (JSON). JSON {"prompt", "n_tokens"}: the prompt /apply-template
    // gives and the count /v1/chat/completions/input_tokens gives. Throws what the server's handler
    // throws: std::invalid_argument for a request it answers 400, other exceptions for 500
    // (a template that raises, among them).
    std::string apply(const std::string & body) const;
    // content: a prompt as /tokenize takes it (JSON: a text, or texts and token ids mixed).
    // Its tokens, as /tokenize gives them.
    std::vector<int32_t> tokenize(const std::string & content, bool add_special, bool parse_special) const;
    // JSON: the template's capabilities, as /props reports them (chat_template_caps).
    std::string caps() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// GBNF for a JSON schema (JSON text), by upstream's converter, as the server's json_schema
// parameter uses it. Throws std::invalid_argument for a schema it cannot convert.
std::string json_schema_grammar(const std::string & schema);

// The web UI's answer to a GET of `name` (a path below the server's root; "" is the page itself), as
// upstream's HTTP layer gives it: the embedded asset, gzipped, with its ETag, cache policy and, for
// the page, the cross-origin isolation headers; 304 when if_none_match names it, 415 for a client
// that takes no gzip, 404 for anything else (and for every name in a build without the UI).
reply ui_asset(const std::string & name, bool accepts_gzip, const std::string & if_none_match);

// JSON texts, so the Python side needs no struct bindings.
std::string devices_json();
std::string system_info_json();

// A dry run of loading with these llama-server arguments (no weights read, nothing allocated):
// the bytes each device and the host would hold, after fitting as a real load does. JSON.
// connect_rpc: the --rpc workers were checked (else a command line naming any is refused).
std::string memory_estimate_json(const std::vector<std::string> & args, bool connect_rpc);

// The context and load parameters (n_ctx, n_ubatch, cache types, ...) these arguments give a
// server, with upstream's defaults, its model's path, where it listens and its API keys, without
// reading the model.
std::string load_params_json(const std::vector<std::string> & args);

// llama-server's options as upstream's parser defines them: args, env, help, kind, and whether
// handling it ends the process (exits: --help, --version, --list-devices, ...; see exiting_options.h).
std::string options_json();

// llama-server's usage text (what -h prints), on stdout.
void print_usage();

// For the command line only: upstream's own parse of these arguments, which prints what an exiting
// option prints (--version, --list-devices, ...) and ends the process, as llama-server does.
[[noreturn]] void parse_and_exit(const std::vector<std::string> & args);

}  // namespace llamahost
