"""``python -m pipelines`` is the ``sparsefusion`` command."""

import sys

from .cli import main

sys.exit(main())
