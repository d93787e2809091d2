"""Will a model fit, and how: ``estimate()``, the engine's dry run of a load or a plan for devices
this machine lacks, and the closed form from metadata alone. Imports ``gguf``, ``core``, ``errors``.
"""
