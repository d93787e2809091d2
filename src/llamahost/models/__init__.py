"""Where models come from: one reference resolved to files (``resolve``: paths, folders, the
library, the Hub), the quantizations of a folder or repository and which one fits
(``variants``), Hugging Face downloads (``hub``), the local library, its home folder, the demo
model. Imports ``planning``, ``gguf``, ``core``, ``errors``.
"""
