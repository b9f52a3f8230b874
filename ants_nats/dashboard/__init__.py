"""A live, read-only web dashboard of a swarm, served by the package itself.

``ants-nats dashboard`` runs ``run_dashboard``; in a program, ``async with Dashboard(board) as d``
serves it on 127.0.0.1 (``d.url``). The page and its assets ship in the package (plain HTML, CSS,
JavaScript and SVG: no build step, nothing from a CDN); the browser gets a snapshot and then every
change as a server-sent event.
"""

from .app import Dashboard, run_dashboard
from .state import SwarmState

__all__ = ["Dashboard", "SwarmState", "run_dashboard"]
