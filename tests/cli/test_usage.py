"""Usage errors, unknown lanes, an unreachable Redis and ``keygen``: exit codes and one-line errors.

Every command here runs the real ``multipair`` script in a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import stat
import sys
import uuid
from pathlib import Path

import pytest

from multipair.store.secrets_box import MasterKey
from tests.cli.helpers import Cli, Result, clean_env, run, script


def _one_error_line(result: Result) -> str:
    """The command failed with exactly one line on stderr and nothing on stdout."""
    assert "Traceback" not in result.err, result
    lines = result.error_lines()
    assert 1 == len(lines), result
    assert "" == result.out, result
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


# ---------------------------------------------------------------------- usage


async def test_bad_amounts_exit_2_with_one_line_naming_the_problem(cli: Cli) -> None:
    lane = str(uuid.uuid4())
    cases = {
        "12.345": "more than 2 decimal places",
        "-1": "negative",
        "1e3": "not an amount",
        "NaN": "not an amount",
    }
    results = await asyncio.gather(
        *(cli.run("tx", "purchase", lane, "--amount", text) for text in cases)
    )
    for (text, why), result in zip(cases.items(), results, strict=True):
        assert 2 == result.code, result
        line = _one_error_line(result)
        assert line.startswith("multipair tx purchase: error: argument --amount:"), line
        assert why in line, line
        assert repr(text) in line, line


async def test_usage_errors_exit_2(cli: Cli) -> None:
    lane = str(uuid.uuid4())
    unknown, missing, both = await asyncio.gather(
        cli.run("frobnicate"),
        cli.run("tx", "purchase", lane),
        cli.run(
            "lane",
            "add",
            "--pos-id",
            "P",
            "--serial",
            "S",
            "--address",
            "ws://h:1",
            "--auto-address",
        ),
    )
    assert (2, 2, 2) == (unknown.code, missing.code, both.code)
    assert "invalid choice: 'frobnicate'" in _one_error_line(unknown)
    assert "required: --amount" in _one_error_line(missing)
    assert "not allowed with argument" in _one_error_line(both)


async def test_a_transaction_the_contract_refuses_is_not_sent(cli: Cli) -> None:
    lane = str(uuid.uuid4())  # refused before the lane is even looked up
    tip_and_cash, bad_ref = await asyncio.gather(
        cli.run("tx", "purchase", lane, "--amount", "1", "--tip", "1", "--cashout", "2"),
        cli.run("tx", "refund", lane, "--amount", "1", "--pos-ref-id", "order 17"),
    )
    assert (2, 2) == (tip_and_cash.code, bad_ref.code)
    assert (
        "multipair: error: tip_cents cannot be combined with cashout_cents or prompt_for_cashout"
        == _one_error_line(tip_and_cash)
    )
    assert "pos_ref_id" in _one_error_line(bad_ref)


async def test_no_command_prints_help_and_exits_2() -> None:
    result = await run(script())
    assert 2 == result.code
    assert "usage: multipair" in result.out
    for command in ("keygen", "lane", "status", "tx", "events", "simulate"):
        assert command in result.out


async def test_python_m_multipair_cli_is_the_same_program() -> None:
    via_module, via_script = await asyncio.gather(
        run([sys.executable, "-m", "multipair.cli", "--version"]), run([*script(), "--version"])
    )
    assert (0, 0) == (via_module.code, via_script.code)
    assert via_script.out == via_module.out
    assert via_module.out.startswith("multipair ")


# ---------------------------------------------------------------------- unknown lanes


async def test_an_unknown_lane_exits_2_with_one_line(cli: Cli) -> None:
    lane = str(uuid.uuid4())
    results = await asyncio.gather(
        cli.run("lane", "stop", lane, json=False),
        cli.run("tx", "purchase", lane, "--amount", "1.00"),
        cli.run("events", lane),
    )
    for result in results:
        assert 2 == result.code, result
        assert f"multipair: error: lane {lane} not found" == _one_error_line(result)


async def test_a_short_id_that_matches_no_lane_exits_2(cli: Cli) -> None:
    result = await cli.run("lane", "show", "8a5e2dcc")
    assert 2 == result.code
    assert "multipair: error: lane 8a5e2dcc… not found" == _one_error_line(result)


async def test_a_lane_id_that_is_not_hex_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("lane", "show", "counter-3")
    assert 2 == result.code
    assert "is not a lane id" in _one_error_line(result)


# ---------------------------------------------------------------------- Redis and settings


async def test_an_unreachable_redis_exits_2_with_one_line_and_no_traceback() -> None:
    port = _closed_port()
    url = f"redis://127.0.0.1:{port}/0"
    results = await asyncio.gather(
        run([*script(), "--redis-url", url, "--json", "status"]),
        run([*script(), "--redis-url", url, "tx", "purchase", str(uuid.uuid4()), "--amount", "1"]),
    )
    for result in results:
        assert 2 == result.code, result
        line = _one_error_line(result)
        assert line.startswith(f"multipair: error: Redis unreachable at {url} ("), line


async def test_the_redis_password_never_shows_in_the_error() -> None:
    url = f"redis://ops:hunter2@127.0.0.1:{_closed_port()}/0"
    result = await run([*script(), "lane", "list"], env=clean_env(MULTIPAIR_REDIS_URL=url))
    assert 2 == result.code
    line = _one_error_line(result)
    assert "hunter2" not in line
    assert "redis://ops:***@127.0.0.1:" in line


async def test_missing_or_bad_settings_exit_2_with_one_line(redis_url: str, tmp_path: Path) -> None:
    bad_file = tmp_path / "open.key"
    bad_file.write_text(MasterKey.generate().to_base64())
    bad_file.chmod(0o644)
    no_url, bad_prefix, bad_key_file = await asyncio.gather(
        run([*script(), "lane", "list"]),
        run([*script(), "--redis-url", redis_url, "--prefix", "{x}", "lane", "list"]),
        run([*script(), "--redis-url", redis_url, "--master-key-file", str(bad_file), "status"]),
    )
    assert (2, 2, 2) == (no_url.code, bad_prefix.code, bad_key_file.code)
    assert "no Redis: set MULTIPAIR_REDIS_URL or pass --redis-url URL" in _one_error_line(no_url)
    assert "key prefix" in _one_error_line(bad_prefix)
    assert "chmod 600" in _one_error_line(bad_key_file)  # named on the command line: checked


@pytest.mark.parametrize(
    "variable", ["MULTIPAIR_MASTER_KEY=not base64!", "MULTIPAIR_MASTER_KEY_FILE=/nowhere/key"]
)
async def test_a_bad_master_key_setting_does_not_stop_commands_that_need_no_key(
    redis_url: str, key_prefix: str, variable: str
) -> None:
    """Issue 14: the supervisor's key setting left in an operator's shell; `status` reads
    no secret, so it does not read the key either."""
    name, _, value = variable.partition("=")
    result = await run(
        [*script(), "--redis-url", redis_url, "--prefix", key_prefix, "--json", "status"],
        env=clean_env(**{name: value}),
    )
    assert (0, "") == (result.code, result.err), result
    assert [] == result.json()["lanes"]


async def test_global_options_may_also_follow_the_subcommand(
    redis_url: str, key_prefix: str
) -> None:
    result = await run(
        [*script(), "lane", "list", "--redis-url", redis_url, "--prefix", key_prefix, "--json"]
    )
    assert 0 == result.code, result
    assert {"lanes": []} == result.json()


# ---------------------------------------------------------------------- keygen


async def test_keygen_prints_a_new_master_key() -> None:
    human, machine = await asyncio.gather(
        run([*script(), "keygen"]), run([*script(), "--json", "keygen"])
    )
    assert (0, 0) == (human.code, machine.code)
    assert 32 == len(base64.b64decode(human.out.strip(), validate=True))
    document = machine.json()
    assert ["master_key"] == list(document)
    assert 32 == len(base64.b64decode(document["master_key"], validate=True))
    assert human.out.strip() != document["master_key"]


async def test_keygen_output_writes_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = await run([*script(), "--json", "keygen", "--output", str(path)])
    assert 0 == first.code, first
    assert {"output": str(path), "fingerprint": MasterKey.from_file(path).fingerprint()} == (
        first.json()
    )
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    other = tmp_path / "other.key"
    human = await run([*script(), "keygen", "--output", str(other)])
    assert 0 == human.code, human
    fingerprint = MasterKey.from_file(other).fingerprint()
    assert human.out.startswith(
        f"Wrote a new master key to {other} (mode 0600), fingerprint {fingerprint}."
    ), human.out
    assert MasterKey.from_file(other).to_base64() not in human.out
    again = await run([*script(), "keygen", "--output", str(path)])
    assert 2 == again.code
    assert "exists; not overwriting" in _one_error_line(again)


async def test_the_master_key_may_come_from_a_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(MasterKey.generate().to_base64())
    path.chmod(0o600)
    result = await cli.run("lane", "list", "--master-key-file", str(path))
    assert 0 == result.code, result
    assert {"lanes": []} == result.json()


# ---------------------------------------------------------------------- completion, help


@pytest.mark.parametrize("shell", ["bash", "zsh"])
async def test_completion_scripts_complete_subcommands_actions_and_options(shell: str) -> None:
    made = await run([*script(), "completion", shell])
    assert (0, "") == (made.code, made.err), made
    assert made.out.rstrip().endswith("complete -F _multipair multipair")
    if shell == "zsh":
        assert "bashcompinit" in made.out
        return
    probe = (
        made.out + "\nfor words in 'multipair la' 'multipair lane ' 'multipair lane stop --a' "
        "'multipair --json tx st'; do\n"
        '  read -ra COMP_WORDS <<< "$words"; [[ "$words" == *" " ]] && COMP_WORDS+=("")\n'
        '  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _multipair; echo "${COMPREPLY[*]}"\n'
        "done\n"
    )
    shown = await run(["bash", "-c", probe])
    assert 0 == shown.code, shown
    top, lane, option, action = shown.out.splitlines()
    assert "lane" == top
    assert {"add", "pair", "show", "stop", "start", "restart", "txs", "remove"} <= set(lane.split())
    assert "--all" == option
    assert "status" == action


async def test_up_help_is_plain_text() -> None:
    """Issue 14: `up --help` showed the module docstring's reST markup."""
    shown = await run([*script(), "up", "--help"])
    assert 0 == shown.code, shown
    assert "``" not in shown.out
    assert "every multipair command run in the folder that holds" in shown.out
