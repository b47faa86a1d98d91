"""``python -m loghog``: the ``loghog`` command."""

import sys

from loghog.cli import main

sys.exit(main())
