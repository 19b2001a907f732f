"""``python -m pipelines`` is the ``sparsefusion`` command."""

import sys

from pipelines.cli import main

sys.exit(main())
