"""``python -m loghogd``: the same as the ``loghogd`` command."""

import sys

from .cli import main

sys.exit(main())
