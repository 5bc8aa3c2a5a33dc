"""The web console (issue 15): every lane live, one lane's page with its actions, the hosts.

``multipair console`` serves it (:mod:`multipair.console.cli`), and
``multipair up`` starts one beside its stack. Plain HTML, CSS and a small
script from this package (``static/``), no build step; the table is kept
live by server-sent events fed from the lanes' event streams in Redis
(:mod:`multipair.console.feed`), not by the page polling. Every page and
action needs the console's token; actions also need it in a header
(:mod:`multipair.console.app` has the rules).

Modules: :mod:`~multipair.console.app` (the server, :class:`~multipair.console.app.Console`),
:mod:`~multipair.console.feed` (Redis to pages), :mod:`~multipair.console.views` (the JSON
shown), :mod:`~multipair.console.cli` (the command; it imports the server only when run,
so other ``multipair`` commands do not pay for it).
"""

from __future__ import annotations

__all__: list[str] = []
