"""``python -m medlora.cli`` is the ``medlora`` command."""

import sys

from medlora.cli import main

sys.exit(main())
