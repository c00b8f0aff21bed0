"""``python -m council.cli``: the same as the `council` command."""

import sys

from council.cli import main

sys.exit(main())
