"""``python -m services.agent_gateway``: the ``ants-agent-gateway`` command."""

import sys

from .cli import main

sys.exit(main())
