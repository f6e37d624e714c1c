"""``python -m graphrec COMMAND``: the ``graphrec`` command line."""

import sys

from graphrec.cli import main

sys.exit(main())
