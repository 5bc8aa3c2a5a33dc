#!/usr/bin/env python3
"""Render deploy/redis/users.acl into the ACL file Redis loads (``aclfile``).

Python 3.8+, standard library only: it runs on the Redis machine, where
multipair need not be installed. What it does to the template:

- drops comment lines (``#`` first) and blank lines, and joins each user's
  indented lines into one line: Redis reads one user per line, no comments;
- replaces ``@POS_PASSWORD@``, ``@SERVICE_PASSWORD@``, ``@OPS_PASSWORD@`` and
  ``@ADMIN_PASSWORD@`` with ``#<sha256>`` of each password read from its file
  (never the password itself); a role given two files (old and new, while a
  password is rotated) accepts both;
- with ``--prefix P``, writes ``~P:`` for every ``~mp:`` (key patterns).

Usage (docs/runbook.md, "Redis users: create them, rotate their passwords")::

    openssl rand -hex 32 > /root/redis-pos.password      # and one per role
    python3 deploy/redis/render_users_acl.py \\
        --pos-password-file /root/redis-pos.password \\
        --service-password-file /root/redis-service.password \\
        --ops-password-file /root/redis-ops.password \\
        --admin-password-file /root/redis-admin.password \\
        --output /etc/redis/users.acl

Exit 0 when written, 2 on a usage error or an unusable password file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().with_name("users.acl")

ROLES = {
    "pos": "@POS_PASSWORD@",
    "service": "@SERVICE_PASSWORD@",
    "ops": "@OPS_PASSWORD@",
    "admin": "@ADMIN_PASSWORD@",
}
"""Role (``--ROLE-password-file``) -> its placeholder in the template."""

MIN_PASSWORD_CHARS = 32
"""``openssl rand -hex 16`` gives 32; ``-hex 32`` (64 characters) is what the runbook uses."""

# As multipair.broker_schema.keys.validate_prefix: no glob characters (* ? [ \),
# so a prefix is literal in a key pattern.
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
# A password goes in a redis:// URL and a shell: printable ASCII, no space.
_PASSWORD = re.compile(r"[\x21-\x7e]+")


class RenderError(Exception):
    """The template or a password file cannot be used; the message says why."""


def read_password(path: Path) -> str:
    """The password in ``path``: its text without the final line break."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RenderError(f"cannot read password file {path}: {exc}") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not _PASSWORD.fullmatch(text):
        raise RenderError(
            f"password file {path}: one line of printable ASCII without spaces expected"
        )
    if len(text) < MIN_PASSWORD_CHARS:
        raise RenderError(
            f"password file {path}: {len(text)} characters; at least {MIN_PASSWORD_CHARS} "
            "(make one with `openssl rand -hex 32`)"
        )
    return text


def password_hash(password: str) -> str:
    """``#<sha256 hex>``: how an ACL file names a password without holding it."""
    return "#" + hashlib.sha256(password.encode("utf-8")).hexdigest()


def join_lines(template: str) -> list[str]:
    """One line per user: comments and blank lines dropped, indented lines joined."""
    lines: list[str] = []
    for number, raw in enumerate(template.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in " \t":
            if not lines:
                raise RenderError(f"template line {number}: an indented line follows no user")
            lines[-1] += " " + stripped
        else:
            lines.append(stripped)
    for line in lines:
        if not line.startswith("user "):
            raise RenderError(f"template: a line does not start with 'user ': {line[:60]!r}")
    return lines


def render(template: str, passwords: dict[str, list[str]], prefix: str = "mp") -> str:
    """The ACL file text for ``passwords`` (role -> its passwords) under ``prefix``."""
    if not _PREFIX.fullmatch(prefix) or prefix.endswith(":"):
        raise RenderError(
            f"key prefix must be 1-64 letters, digits or '_.:-' (not ending in ':'), got {prefix!r}"
        )
    text = "\n".join(join_lines(template)) + "\n"
    for role, placeholder in ROLES.items():
        given = passwords.get(role) or []
        if placeholder in text and not given:
            raise RenderError(f"no password for the {role} role: --{role}-password-file FILE")
        text = text.replace(placeholder, " ".join(password_hash(p) for p in given))
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise RenderError(f"template placeholders this script does not know: {', '.join(left)}")
    # Key patterns are `~mp:...`, `%R~mp:...`, `%W~mp:...`, `%RW~mp:...`.
    return text.replace("~mp:", f"~{prefix}:")


def write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0640) through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Render deploy/redis/users.acl (multipair's Redis roles) for Redis' aclfile.",
    )
    for role in ROLES:
        parser.add_argument(
            f"--{role}-password-file",
            dest=role,
            action="append",
            type=Path,
            metavar="FILE",
            help=f"file holding the {role} role's password; twice (new and old) while rotating",
        )
    parser.add_argument(
        "--prefix", default="mp", help="multipair's key prefix, MULTIPAIR_PREFIX (default: mp)"
    )
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE, help="the template (default: users.acl here)"
    )
    parser.add_argument(
        "--output", type=Path, help="where to write the ACL file (default: standard output)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        passwords = {role: [read_password(p) for p in getattr(args, role) or []] for role in ROLES}
        try:
            template = args.template.read_text(encoding="utf-8")
        except OSError as exc:
            raise RenderError(f"cannot read the template {args.template}: {exc}") from None
        text = render(template, passwords, args.prefix)
        if args.output is None:
            sys.stdout.write(text)
        else:
            write(args.output, text)
    except (RenderError, OSError) as exc:
        print(f"render_users_acl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
