"""The engine as Python objects: ``Client`` (every call of a llama.cpp server, over any transport,
and ``HTTPClient`` over HTTP), ``Server`` (llama-server in this process), ``ChatTemplate`` (the
vocabulary-only half of a server), ``count_tokens``, and RPC workers (``RPCWorker``,
``serve_rpc``: this machine's devices for servers elsewhere). Imports ``chat``, ``models``,
``planning``, ``gguf``, ``core``, ``errors``.
"""
