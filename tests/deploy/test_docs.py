"""docs/integration.md and docs/runbook.md stay in step with the code they describe.

Every ``XADD`` example must be a valid command on a lane's command stream
(the guarded one too), every rejection reason of the code must be in the
integration guide's table (and nothing else), and every ``multipair``
command line the runbook shows must parse with the real CLI parser.
"""

from __future__ import annotations

import datetime as _dt
import re
import shlex
from pathlib import Path

import pytest

from multipair import broker_schema as bs
from multipair.cli import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
INTEGRATION = (DOCS / "integration.md").read_text(encoding="utf-8")
RUNBOOK = (DOCS / "runbook.md").read_text(encoding="utf-8")
NOW = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)
"""Before every example's ``expires_at``."""


def xadd_lines() -> list[str]:
    return [
        line.strip()
        for text in (INTEGRATION, RUNBOOK)
        for line in text.splitlines()
        if line.strip().startswith("XADD ") and ":commands" in line
    ]


@pytest.mark.parametrize("line", xadd_lines())
def test_every_xadd_example_is_a_valid_command(line: str) -> None:
    args = shlex.split(line)
    assert ["XADD", "*", "v", "1", "body"] == [args[0], args[2], args[3], args[4], args[5]]
    lane = re.fullmatch(r"mp:lane:\{([0-9a-f-]+)\}:commands", args[1])
    assert lane is not None
    assert bs.Keys().commands(lane.group(1)) == args[1]
    bs.decode_command({"v": args[4], "body": args[6]}, now=NOW)


def test_the_guarded_add_example_watches_the_profile_of_the_lane_it_adds_to() -> None:
    """``WATCH`` / ``EXISTS`` the profile, then ``MULTI`` / ``XADD`` / ``EXEC``, one lane."""
    lines = [x.strip() for x in INTEGRATION.splitlines()]
    start = lines.index(next(x for x in lines if x.startswith("WATCH ")))
    words = [shlex.split(x) for x in lines[start : start + 5]]
    assert ["WATCH", "EXISTS", "MULTI", "XADD", "EXEC"] == [w[0] for w in words]
    profile = words[0][1]
    lane = re.fullmatch(r"mp:lane:\{([0-9a-f-]+)\}:profile", profile)
    assert lane is not None
    keys = bs.Keys()
    assert (keys.profile(lane.group(1)), keys.commands(lane.group(1))) == (
        words[1][1],
        words[3][1],
    )
    assert "EVAL " not in INTEGRATION, "POS backends run no Lua (the multipair-pos role)"


def test_the_json_bodies_in_the_text_are_valid_commands() -> None:
    bodies = re.findall(r"`(\{\"type\":\"[a-z_]+\"[^`]*\})`", INTEGRATION)
    assert bodies
    for body in bodies:
        bs.decode_command({"v": "1", "body": body}, now=NOW)


def test_the_reason_table_names_exactly_the_codes_reasons() -> None:
    section = INTEGRATION.split("## Rejection reasons", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert sorted(r.value for r in bs.Reason) == sorted(listed)


def test_the_event_and_command_types_named_in_the_guide_exist() -> None:
    named = set(re.findall(r"`([a-z_]+)`", INTEGRATION))
    ends = INTEGRATION.split("Which event ends which command", 1)[1].split("\n\n", 2)[1]
    in_table = set(re.findall(r"`([a-z_]+)`", ends))
    assert in_table <= set(bs.COMMAND_TYPES) | set(bs.EVENT_TYPES) | {
        "succeeded",
        "failed",
        "cancelled",
        "state",
    }
    assert set(bs.COMMAND_TYPES) <= in_table, "every command says which event ends it"
    assert named >= {"transaction_completed", "transaction_lookup", "command_rejected"}


def multipair_lines() -> list[str]:
    """Command lines in code blocks, and the example commands (on lane ``8a5e``) in the text."""
    lines = []
    for text in (RUNBOOK, INTEGRATION):
        for line in text.splitlines():
            code = line.strip()
            if code.startswith("multipair "):
                lines.append(code.split("#", 1)[0].split("|", 1)[0].strip())
        lines += re.findall(r"`(multipair [^`]* 8a5e\b[^`]*)`", text)
    return sorted(set(lines))


@pytest.mark.parametrize("line", multipair_lines())
def test_every_multipair_command_in_the_docs_parses(line: str) -> None:
    args = shlex.split(line)[1:]
    parsed = build_parser().parse_args(args)
    assert getattr(parsed, "handler", None) is not None, line
