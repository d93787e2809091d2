"""GGUF files read without loading weights: the header and tensor table (``reader``), ggml's
tensor types (``tensors``), the checks that keep files llama.cpp would crash on away from it
(``preflight``), and what a model is (``info``: ``inspect``, the parts of a split model).
Imports ``core`` and ``errors``.
"""
