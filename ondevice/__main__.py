"""``python -m ondevice`` is the ``ondevice`` command."""

import sys

from .cli import main

sys.exit(main())
