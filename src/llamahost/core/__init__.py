"""The native engine and what talks to it directly: the Cython binding ``_native`` over the C++
glue (``_engine.cpp``: llama-server in this process, its dry runs, its option table;
``_backends.cpp``: which ggml backend loads), llama-server's parameters from Python values
(``config``) and its command line read back (``cmdline``), the devices, the heap, the security
defaults, and how answers come back from any server (``transport``). Imports nothing of llamahost
but ``errors``.
"""
