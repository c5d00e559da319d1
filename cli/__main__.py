"""``python -m cli``: the same as the ``phm`` command."""

import sys

from cli.main import console

sys.exit(console())
