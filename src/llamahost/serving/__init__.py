"""Serving many models: the ``Pool`` (shared servers, budgets, idle unloads, restarts), worker
processes, the multi-model router, its metrics, the application ``Provider``, and the loop that
serves one model (``serve``). Imports everything below it; never ``bench`` or the CLI.
"""
