"""The benchmark against the peers (``llamahost bench``, ``bench/*.py``): never imported by the
runtime. Imports anything below the CLI.
"""
