"""``python -m mtia_graph.bench``: run the benchmarks (see mtia_graph.bench for options)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
