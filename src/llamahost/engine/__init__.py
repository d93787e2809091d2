"""The engine as Python objects: ``Client`` (every call of a llama.cpp server, over any transport,
and ``HTTPClient`` over HTTP), ``Server`` (llama-server in this process), ``ChatTemplate`` (the
vocabulary-only half of a server) and ``count_tokens``. Imports ``chat``, ``models``,
``planning``, ``gguf``, ``core``, ``errors``.
"""
