"""``python -m lccore``: the command line, also for launchers (``accelerate launch -m lccore train ...``)."""

import sys

from .cli import main

sys.exit(main())
