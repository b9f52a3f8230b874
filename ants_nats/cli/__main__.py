"""``python -m ants_nats.cli``: the ``ants-nats`` command, as the demo and the tests start it."""

import sys

from . import main

sys.exit(main())
