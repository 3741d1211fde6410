"""``python -m bench``: the performance suite (see bench/README.md)."""

import sys

from bench.suite import main

sys.exit(main())
