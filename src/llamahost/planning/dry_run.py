"""``python -m llamahost.planning.dry_run ARGS``: the engine's dry run of llama-server's command
line, printed as JSON on the last line of stdout (exit status 1 and the reason on stderr where
the engine refuses it). ``estimate.engine_dry_run`` runs it for a command line with RPC workers,
whose devices the engine registers for the rest of the process it runs in."""

import sys

from ..core import _native

if __name__ == "__main__":
    try:
        print(_native.memory_estimate(sys.argv[1:], connect_rpc=True), flush=True)  # checked by the parent
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
