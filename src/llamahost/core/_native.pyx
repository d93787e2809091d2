# cython: language_level=3
# distutils: language = c++
"""Thin binding of _engine.h: converts types and releases the GIL, nothing else
(plus the typed loops of the GGUF reader's hot paths)."""

cimport cython
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.string cimport memcmp, memcpy
from libcpp cimport bool as cbool
from libcpp.map cimport map
from libcpp.string cimport string
from libcpp.vector cimport vector

import os

cdef extern from "_engine.h" namespace "llamahost" nogil:
    cdef cppclass reply:
        int status
        string content_type
        string body
        map[string, string] headers
        uint64_t stream_id

    cdef cppclass engine:
        engine(const vector[string] & args) except +
        void start() except +
        reply call(const string & method, const string & path, const string & body) except +
        cbool next_chunk(uint64_t stream_id, string & chunk) except +
        void close_stream(uint64_t stream_id) except +
        void stop() except +
        int port()
        cbool running()
        vector[string] routes()
        string memory_breakdown()
        string fitted()

    cdef cppclass chat_vocab:
        chat_vocab(const vector[string] & args) except +
        string apply(const string & body) except +
        vector[int32_t] tokenize(const string & content, cbool add_special, cbool parse_special) except +
        string caps() except +

    string json_schema_grammar(const string & schema) except +
    reply ui_asset(const string & name, cbool accepts_gzip, const string & if_none_match) except +
    string devices_json() except +
    string system_info_json() except +
    string options_json() except +
    string memory_estimate_json(const vector[string] & args, cbool connect_rpc) except +
    string load_params_json(const vector[string] & args) except +
    void print_usage() except +
    void parse_and_exit(const vector[string] & args) except +

cdef extern from *:
    """
    static const char * LLAMAHOST_BACKEND_NAME = LLAMAHOST_BACKEND;
    """
    const char * LLAMAHOST_BACKEND_NAME

# the ggml backend this extension was built for (CMake's LLAMAHOST_BACKEND)
BACKEND = LLAMAHOST_BACKEND_NAME.decode("ascii")

cdef extern from "_backends.h" namespace "llamahost" nogil:
    void set_backend_dir(const string & dir)
    void load_backends(const string & forced) except +
    string backends_json() except +
    void rpc_serve(const string & endpoint, const string & cache_dir, int n_threads,
                   const vector[string] & device_names) except +

cdef extern from "ggml-rpc.h":
    enum:
        RPC_PROTO_MAJOR_VERSION
        RPC_PROTO_MINOR_VERSION
        RPC_PROTO_PATCH_VERSION

# the ggml RPC protocol version this build speaks (major, minor, patch)
RPC_PROTOCOL = (RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION, RPC_PROTO_PATCH_VERSION)

# portable builds load their backend modules from the package directory
set_backend_dir(os.path.dirname(__file__).encode("utf-8"))


def use_backend(str forced):
    cdef string f = forced.encode("utf-8")
    with nogil:
        load_backends(f)


def serve_rpc(str endpoint, str cache_dir, int n_threads, devices):
    cdef string e = endpoint.encode("utf-8")
    cdef string c = cache_dir.encode("utf-8")
    cdef vector[string] names = _encode_args(devices)
    with nogil:  # until the process ends
        rpc_serve(e, c, n_threads, names)


def backends():
    cdef string out
    with nogil:  # it waits for a backend load another thread may be doing
        out = backends_json()
    return out.decode("utf-8")


cdef vector[string] _encode_args(args):
    cdef vector[string] out
    for a in args:
        out.push_back(str(a).encode("utf-8"))
    return out


cdef class Engine:
    """One llama.cpp server. ``args`` are llama-server's command-line arguments."""

    cdef engine * _ptr

    def __cinit__(self, args):
        cdef vector[string] cargs = _encode_args(args)
        with nogil:
            self._ptr = new engine(cargs)

    def __dealloc__(self):
        if self._ptr != NULL:
            with nogil:
                del self._ptr
            self._ptr = NULL

    def start(self):
        with nogil:
            self._ptr.start()

    def call(self, str method, str path, bytes body):
        """(status, content_type, headers, body or None, stream_id)"""
        cdef string m = method.encode("ascii")
        cdef string p = path.encode("utf-8")
        cdef string b = body
        cdef reply r
        with nogil:
            r = self._ptr.call(m, p, b)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in r.headers}
        return (r.status, r.content_type.decode("latin-1"), headers,
                None if r.stream_id else <bytes> r.body, r.stream_id)

    def next_chunk(self, uint64_t stream_id):
        """(chunk bytes, more)"""
        cdef string chunk
        cdef cbool more
        with nogil:
            more = self._ptr.next_chunk(stream_id, chunk)
        return <bytes> chunk, more

    def close_stream(self, uint64_t stream_id):
        with nogil:
            self._ptr.close_stream(stream_id)

    def stop(self):
        with nogil:
            self._ptr.stop()

    @property
    def port(self):
        return self._ptr.port()

    @property
    def running(self):
        return self._ptr.running()

    def memory_breakdown(self):
        return self._ptr.memory_breakdown().decode("utf-8")

    def fitted(self):
        return self._ptr.fitted().decode("utf-8")

    def routes(self):
        return sorted(r.decode("utf-8") for r in self._ptr.routes())


cdef class ChatVocab:
    """A model's vocabulary and chat templates without its weights; ``args`` as for Engine."""

    cdef chat_vocab * _ptr

    def __cinit__(self, args):
        cdef vector[string] cargs = _encode_args(args)
        with nogil:
            self._ptr = new chat_vocab(cargs)

    def __dealloc__(self):
        if self._ptr != NULL:
            with nogil:
                del self._ptr
            self._ptr = NULL

    def apply(self, bytes body):
        """JSON {"prompt", "n_tokens"} for an OpenAI chat request body."""
        cdef string b = body
        cdef string out
        with nogil:
            out = self._ptr.apply(b)
        return out.decode("utf-8")

    def tokenize(self, bytes content, cbool add_special, cbool parse_special):
        """Token ids of ``content`` (JSON, as /tokenize takes it)."""
        cdef string c = content
        cdef vector[int32_t] out
        with nogil:
            out = self._ptr.tokenize(c, add_special, parse_special)
        return list(out)

    def caps(self):
        return self._ptr.caps().decode("utf-8")


def schema_grammar(str schema):
    cdef string s = schema.encode("utf-8")
    cdef string out
    with nogil:
        out = json_schema_grammar(s)
    return out.decode("utf-8")


def devices():
    cdef string out
    with nogil:
        out = devices_json()
    return out.decode("utf-8")


def system_info():
    cdef string out
    with nogil:
        out = system_info_json()
    return out.decode("utf-8")


def memory_estimate(args, cbool connect_rpc=False):
    cdef vector[string] cargs = _encode_args(args)
    cdef string out
    with nogil:
        out = memory_estimate_json(cargs, connect_rpc)
    return out.decode("utf-8")


def load_params(args):
    cdef vector[string] cargs = _encode_args(args)
    cdef string out
    with nogil:
        out = load_params_json(cargs)
    return out.decode("utf-8")


def options():
    cdef string out
    with nogil:
        out = options_json()
    return out.decode("utf-8")


def web_ui_asset(str name, cbool accepts_gzip, str if_none_match):
    """The web UI's answer to a GET of ``name``: (status, content type, headers, body)."""
    cdef string n = name.encode("utf-8")
    cdef string inm = if_none_match.encode("utf-8")
    cdef reply r
    with nogil:
        r = ui_asset(n, accepts_gzip, inm)
    return r.status, r.content_type.decode("utf-8"), {k.decode("utf-8"): v.decode("utf-8") for k, v in r.headers}, r.body


def usage():
    """Print llama-server's usage text on stdout."""
    with nogil:
        print_usage()


def exit_as_llama_server(args):
    """The command line's own: llama-server's handling of an option that prints and exits
    (--version, --list-devices, ...). Ends this process."""
    cdef vector[string] cargs = _encode_args(args)
    with nogil:
        parse_and_exit(cargs)



@cython.boundscheck(False)
cdef inline Py_ssize_t _after_string(const unsigned char[::1] buf, Py_ssize_t pos) noexcept nogil:
    """The offset after the GGUF string at ``pos`` (little-endian u64 length, then the bytes),
    or -1 when it runs past the end."""
    cdef Py_ssize_t size = buf.shape[0]
    cdef uint64_t n
    if pos > size - 8:
        return -1
    memcpy(&n, &buf[pos], 8)
    if n > <uint64_t>(size - pos - 8):
        return -1
    return pos + 8 + <Py_ssize_t>n


def skip_gguf_strings(const unsigned char[::1] buf, Py_ssize_t pos, uint64_t count):
    """The offset after ``count`` GGUF strings starting at ``pos``, or -1 when one runs past the
    end. A vocabulary holds 100k+ of them."""
    cdef uint64_t i
    for i in range(count):
        pos = _after_string(buf, pos)
        if pos < 0:
            return -1
    return pos


cdef struct _token:
    const unsigned char * text
    uint64_t n


@cython.boundscheck(False)
cdef _token _token_text(const unsigned char[::1] buf, Py_ssize_t pos, uint64_t index, char * scratch) noexcept nogil:
    """A vocabulary token's bytes; an empty one as "[EMPTY_<index>]", the name llama.cpp gives it."""
    cdef _token t
    memcpy(&t.n, &buf[pos], 8)
    if t.n:
        t.text = &buf[pos + 8]
    else:
        t.n = snprintf(scratch, 32, "[EMPTY_%llu]", <unsigned long long> index)
        t.text = <const unsigned char *> scratch
    return t


@cython.boundscheck(False)
@cython.wraparound(False)
def first_duplicate_gguf_string(const unsigned char[::1] buf, Py_ssize_t pos, uint32_t count):
    """The index of the first of ``count`` GGUF strings from ``pos`` that repeats an earlier
    one, or -1 (also when one runs past the end: skip_gguf_strings reports that). Each slot of
    an open-addressing table holds a string's hash (high 32 bits) and 1 + its index; strings
    are compared byte for byte only when their hashes match."""
    cdef uint64_t i, j, h, entry, slot, mask = 1
    cdef Py_ssize_t end
    cdef vector[Py_ssize_t] starts
    cdef vector[uint64_t] table
    cdef char scratch_a[32]
    cdef char scratch_b[32]
    cdef _token a, b
    while mask < 2 * <uint64_t> count:
        mask <<= 1
    table.assign(mask, 0)
    mask -= 1
    starts.reserve(count)
    for i in range(count):
        end = _after_string(buf, pos)
        if end < 0:
            return -1
        a = _token_text(buf, pos, i, scratch_a)
        h = 14695981039346656037ULL  # FNV-1a
        for j in range(a.n):
            h = (h ^ a.text[j]) * 1099511628211ULL
        starts.push_back(pos)
        slot = h & mask
        while True:
            entry = table[slot]
            if not entry:
                table[slot] = (h & 0xFFFFFFFF00000000ULL) | (i + 1)
                break
            if (entry ^ h) >> 32 == 0:
                j = (entry & 0xFFFFFFFFULL) - 1
                b = _token_text(buf, starts[j], j, scratch_b)
                if a.n == b.n and memcmp(a.text, b.text, a.n) == 0:
                    return i
            slot = (slot + 1) & mask
        pos = end
    return -1
