"""The supervisor: one isolated OS process per lane, under leases (DESIGN.md "Process model").

- :mod:`~multipair.supervisor.policy`: backoff and crash-loop rules (pure).
- :mod:`~multipair.supervisor.decide`: ``reconcile(desired, running, leases, now)
  -> actions`` (pure).
- :mod:`~multipair.supervisor.procs`: the only code that forks and reaps: a
  preloaded template process forks the lanes.
- :mod:`~multipair.supervisor.host`: the I/O loop of one host, the shell
  around its rooms: :mod:`~multipair.supervisor.observe` (what a tick reads),
  :mod:`~multipair.supervisor.lanes` (lane records and the plan's actions),
  :mod:`~multipair.supervisor.reports` (fenced writes about a lane),
  :mod:`~multipair.supervisor.outage` (riding out a Redis outage),
  :mod:`~multipair.supervisor.inbox` (reading the ops control stream).
- :mod:`~multipair.supervisor.control`: the ops control stream's messages.
- :mod:`~multipair.supervisor.cli`: ``multipair supervise``.

Nothing is imported here, so ``python -m multipair.supervisor`` and the
template process load only what they use.
"""
