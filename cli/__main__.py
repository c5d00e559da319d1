"""``python -m cli``: the same as the ``phm`` command."""

import sys

from cli.main import main

sys.exit(main())
