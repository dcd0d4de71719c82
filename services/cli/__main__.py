"""``python -m services.cli``: the ``aioshop`` command (``services.up`` starts its processes
this way)."""

import sys

from services.cli import main

sys.exit(main())
