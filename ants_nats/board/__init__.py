"""The task board: claim-and-lock with server-expiring leases and fencing tokens on JetStream KV.

Protocol (every decision is a single compare-and-set write; there is no coordinator):

* A task's state lives in ``ants_tasks/<id>``. A claim is a CAS of that record from ``pending`` to
  ``claimed``; the **fencing token** is the record revision the claim was based on, so tokens grow
  with every claim of a task and a holder's later writes (CAS on the revision it wrote) fail once
  anyone else has claimed.
* The lease that keeps a claim alive lives on the server. An agent claims through the task's
  *ticket* (see ``_tickets``) and holds it un-acked while it works: the ticket's ack wait is the
  lease, ``in_progress`` the heartbeat, and the server redelivering the ticket the expiry. The
  record names the ticket (``ticket``), so whoever receives it next knows the old holder's lease
  ran out, counts the expired attempt and takes over (or dead-letters the task after
  ``max_attempts``). A direct ``claim(task_id, agent)``, which holds no ticket, keeps its lease as
  ``ants_leases/<id>.<agent>``, a key of its own with a per-key TTL that its heartbeats renew.
* Dependencies: a record lists the dependencies it still ``waits_on`` and its ``dependents``. The
  agent that completes a task removes it from each dependent (CAS); whoever empties the list
  publishes the dependent's ticket. A failed or dead task fails its dependents with a reason.
* Every change leaves an event on the trail, after the CAS that made it true. Outcomes (completed,
  failed, expired, dead, blocked, released, declined) wait for the stream's ack, and a ticket is
  acked only after them, so a crash in between is repaired by the next agent that meets the
  ticket; progress-like events (submitted, ready, claimed, heartbeat, progress) are sent without
  waiting for an ack: one message each instead of two.

Layout: ``facade`` (``TaskBoard``) hands each transition to its family's module: ``submit``,
``claim`` (claiming and keeping a claim), ``settle`` (the outcomes), ``decline`` (declines and the tasks
no live agent will take), ``cancel``, ``requeue`` (retry) and
``schedule`` (tasks the server submits on a schedule); ``propagate`` (dependencies) and
``recover`` (repairs) work behind them, ``read`` has the reads of many records (all, watching,
waiting, usage under a root), ``lease`` holds the pure record changes of a claim and ``_core`` the
stores and the record and event primitives every module shares.
"""

from .config import BoardConfig
from .facade import TaskBoard
from .lease import Lease, NotTaken, Taken

__all__ = ["BoardConfig", "Lease", "NotTaken", "Taken", "TaskBoard"]
