"""``.multipair/env``: how every ``multipair`` command finds the Redis of ``multipair up``.

``multipair up`` writes ``DATA/env`` (mode 0600) with the settings another
process needs to reach its private Redis::

    MULTIPAIR_REDIS_URL='redis://:PASSWORD@127.0.0.1:PORT/0'
    MULTIPAIR_PREFIX='mp'
    MULTIPAIR_MASTER_KEY_FILE='/abs/path/.multipair/master.key'

The file stays while the data folder exists: its port and password are kept
in the folder too (:mod:`multipair.stack`), so it stays right across
restarts of ``up``. Two ways to use it:

- Every ``multipair`` command run in the folder that holds ``.multipair/``
  (the default data folder), with no ``MULTIPAIR_REDIS_URL`` and no
  ``--redis-url``, reads it by itself and says so once on stderr
  (:func:`load_local_env`).
- Anywhere else: ``set -a; . /path/.multipair/env; set +a``. Values are
  shell-quoted, so the file is also valid for ``source`` and for systemd's
  ``EnvironmentFile=``.

Rules this module keeps:

- Only ``MULTIPAIR_*`` names are read from the file, and a variable already
  set in the environment is never replaced (the environment wins, as for
  every setting); ``MULTIPAIR_MASTER_KEY_FILE`` is skipped when either
  master-key variable is set, since both at once is a configuration error.
- The file holds a password: it is written 0600 and replaced, never edited
  in place. Nothing here prints a value.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Final

from multipair.exceptions import ConfigurationError

__all__ = [
    "ENV_FILE_NAME",
    "LOCAL_DATA_DIR",
    "load_local_env",
    "read_env_file",
    "render_env_file",
    "write_private",
]

ENV_FILE_NAME: Final = "env"
"""The file's name in the data folder."""
LOCAL_DATA_DIR: Final = Path(".multipair")
"""``multipair up``'s default data folder, relative to where it runs."""

_MASTER_KEY_VARS: Final = ("MULTIPAIR_MASTER_KEY", "MULTIPAIR_MASTER_KEY_FILE")
_MAX_BYTES: Final = 64 * 1024


def render_env_file(values: Mapping[str, str], *, comment: str) -> str:
    """The text of an env file: ``# comment`` lines, then ``NAME='value'`` lines."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """The ``MULTIPAIR_*`` variables of an env file (comments and other names skipped).

    Raises :class:`ConfigurationError` naming the file and line when a line
    is not ``NAME=VALUE`` shell syntax.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_BYTES:
        raise ConfigurationError(f"{path} is larger than {_MAX_BYTES} bytes: not an env file")
    found: dict[str, str] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, raw = text.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigurationError(f"{path}, line {number}: not NAME=VALUE")
        try:
            parts = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise ConfigurationError(f"{path}, line {number}: {exc}") from None
        if name.startswith("MULTIPAIR_"):
            found[name] = "".join(parts)
    return found


def load_local_env(
    environ: MutableMapping[str, str] | None = None, *, cwd: Path | None = None
) -> Path | None:
    """Put ``./.multipair/env`` into ``environ`` (default ``os.environ``) when it applies.

    It applies when the file exists in ``cwd`` (default: the working folder)
    and neither ``MULTIPAIR_REDIS_URL`` nor ``MULTIPAIR_REDIS_SENTINELS`` is
    set. Returns the file's path when it
    was read, ``None`` otherwise; variables already set are kept.
    """
    env = os.environ if environ is None else environ
    if env.get("MULTIPAIR_REDIS_URL") or env.get("MULTIPAIR_REDIS_SENTINELS"):
        return None
    path = (cwd if cwd is not None else Path.cwd()) / LOCAL_DATA_DIR / ENV_FILE_NAME
    if not path.is_file():
        return None
    values = read_env_file(path)
    key_given = any(env.get(name) for name in _MASTER_KEY_VARS)
    for name, value in values.items():
        if name in _MASTER_KEY_VARS and key_given:
            continue
        if not env.get(name):
            env[name] = value
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` by a new file of mode 0600 holding ``text`` (never edited in place)."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)
