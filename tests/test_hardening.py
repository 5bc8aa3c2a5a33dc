"""multipair.hardening: secrets stay out of children's environments; guarded processes
cannot be dumped and write no core file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from multipair.hardening import SECRET_ENV, forget_secret_env, private_env


def test_private_env_drops_every_secret_and_keeps_the_rest() -> None:
    env = {name: "x" for name in SECRET_ENV} | {"PATH": "/bin", "MULTIPAIR_PREFIX": "mp"}
    assert {"PATH": "/bin", "MULTIPAIR_PREFIX": "mp"} == private_env(env)


def test_forget_secret_env_removes_them_in_place() -> None:
    env = {"MULTIPAIR_MASTER_KEY": "k", "MULTIPAIR_LOG_FORMAT": "json"}
    forget_secret_env(env)
    assert {"MULTIPAIR_LOG_FORMAT": "json"} == env


def test_the_master_key_variables_are_secret() -> None:
    assert {"MULTIPAIR_MASTER_KEY", "MULTIPAIR_MASTER_KEY_FILE"} <= set(SECRET_ENV)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux")
def test_a_guarded_process_is_not_dumpable_and_writes_no_core() -> None:
    # In a child: the core limit cannot be raised again, and the test runner must stay as it is.
    script = (
        "import json, os\n"
        "from multipair.hardening import guard_process, process_guards\n"
        "before = process_guards()\n"
        "guard_process()\n"
        "after = process_guards()\n"
        "with open(f'/proc/{os.getpid()}/limits') as f:\n"
        "    core = [line.split()[4:6] for line in f if line.startswith('Max core file size')][0]\n"
        "print(json.dumps([before.dumpable, after.dumpable, after.core_limit, core]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert [True, False, 0, ["0", "0"]] == json.loads(done.stdout)
