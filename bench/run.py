"""The benchmark against the peers (the runner lives in the package: `llamahost bench`)."""

import sys

from llamahost.bench.run import main

sys.exit(main())
