"""``python -m pipelines.cli`` is the ``sparsefusion`` command too."""

import sys

from pipelines.cli.main import main

sys.exit(main())
