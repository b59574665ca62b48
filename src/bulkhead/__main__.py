"""``python -m bulkhead serve MODULE:REGISTRY``: see :mod:`bulkhead.service.cli`."""

import sys

from bulkhead.service.cli import main

sys.exit(main())
