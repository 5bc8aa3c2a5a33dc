"""The console's HTML pages: one frame, filled with each page's own part.

Every page shares its head, header and navigation (``static/frame.html``);
a page's file (``static/lanes.html``, ``hosts.html``, ``lane.html``) holds
only its ``<main>`` and what follows, where ``{{confirm}}`` stands for the
confirmation dialog the pages with actions share (``static/confirm.html``).
The console puts each page together once, when it starts.
"""

from __future__ import annotations

import importlib.resources
from typing import Final

__all__ = ["NAV", "page", "static"]

NAV: Final = (("/", "Lanes"), ("/hosts", "Hosts"))
"""The header's links, in order: (path, label)."""


def static(name: str) -> bytes:
    """The file ``name`` of the console's ``static`` folder."""
    return (importlib.resources.files("multipair.console") / "static" / name).read_bytes()


def page(name: str, current: str | None) -> bytes:
    """The page ``name`` (``lanes``, ``hosts``, ``lane``) in the frame.

    ``current`` is the path of the header link marked as this page, if any.
    """
    marked = ' aria-current="page"'
    nav = "\n".join(
        f'      <a href="{path}"{marked if path == current else ""}>{label}</a>'
        for path, label in NAV
    )
    own = static(f"{name}.html").decode().rstrip("\n")
    own = own.replace("{{confirm}}", static("confirm.html").decode().rstrip("\n"))
    frame = static("frame.html").decode()
    filled = frame.replace("{{page}}", name).replace("{{nav}}", nav).replace("{{main}}", own)
    return filled.encode()
