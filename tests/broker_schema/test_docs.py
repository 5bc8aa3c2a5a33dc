"""docs/broker-schema.md stays in step with the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from multipair.broker_schema import COMMAND_TYPES, EVENT_TYPES, Keys, Reason, decode_command
from tests.broker_schema.helpers import NOW

DOC = Path(__file__).resolve().parents[2] / "docs" / "broker-schema.md"
TEXT = DOC.read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text of a ``## title`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", TEXT, re.S | re.M)
    assert match is not None, f"no section '## {title}'"
    return match.group(1)


def _subsections(section: str) -> dict[str, str]:
    """``### `name``` headings of a section and their text."""
    parts = re.split(r"^### `([a-z_]+)`\n", section, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _xadd_lines() -> list[str]:
    # Command examples only: the control-stream example is an ops message.
    return [line for line in TEXT.splitlines() if line.startswith("XADD ") and ":commands" in line]


def test_every_command_type_has_a_heading_under_commands() -> None:
    assert sorted(COMMAND_TYPES) == sorted(_subsections(_section("Commands")))


def test_every_event_type_has_a_heading_under_events() -> None:
    assert sorted(EVENT_TYPES) == sorted(_subsections(_section("Events")))


@pytest.mark.parametrize("kind", sorted(COMMAND_TYPES))
def test_every_command_field_and_kind_is_documented_in_its_section(kind: str) -> None:
    text = _subsections(_section("Commands"))[kind]
    cls = COMMAND_TYPES[kind]
    missing = [s.name for s in cls.wire_fields[2:] if f"`{s.name}`" not in text]
    assert ([], True) == (missing, f"Kind: {cls.kind.value}" in text)


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_field_is_documented_in_its_section(kind: str) -> None:
    text = _subsections(_section("Events"))[kind]
    missing = [s.name for s in EVENT_TYPES[kind].wire_fields[3:] if f"`{s.name}`" not in text]
    assert [] == missing


def test_every_reason_is_documented() -> None:
    text = _section("Rejection reasons")
    assert [] == [r.value for r in Reason if f"`{r.value}`" not in text]


def test_every_command_type_has_an_xadd_example() -> None:
    types = set()
    for line in _xadd_lines():
        args = shlex.split(line)
        types.add(decode_command({"v": args[4], "body": args[6]}, now=NOW).type)
    assert sorted(COMMAND_TYPES) == sorted(types)


@pytest.mark.parametrize("line", _xadd_lines())
def test_xadd_example_is_a_valid_command_on_a_lane_command_stream(line: str) -> None:
    args = shlex.split(line)
    assert ["XADD", "*", "v", "1", "body"] == [args[0], args[2], args[3], args[4], args[5]]
    assert 7 == len(args)
    lane = re.fullmatch(r"mp:lane:\{([0-9a-f-]+)\}:commands", args[1])
    assert lane is not None
    assert Keys().commands(lane.group(1)) == args[1]
    decode_command({"v": args[4], "body": args[6]}, now=NOW)
