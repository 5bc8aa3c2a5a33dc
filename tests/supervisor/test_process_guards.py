"""What a real supervisor does for the master key and its lanes' processes (issue 12, item 5):
no secret in a lane's environment, lanes not dumpable and without core files, and a lane
over its memory bound restarted with ``memory`` as the reason."""

from __future__ import annotations

import os
from typing import Any

from multipair.config import DEFAULT_LANE_MEMORY_MAX
from multipair.supervisor.procs import rss_bytes
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, SupervisorProcess

HOST = "host-a"
SECRET_VARIABLES = (
    b"MULTIPAIR_MASTER_KEY",
    b"MULTIPAIR_MASTER_KEY_FILE",
    b"MULTIPAIR_REDIS_URL",
    b"MULTIPAIR_DEVICE_API_KEY",
)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def environ_of(pid: int) -> list[bytes]:
    """The environment a process was started with (``NAME=value`` entries)."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return environ.read().split(b"\0")


def core_limits(pid: int) -> list[str]:
    """Soft and hard ``Max core file size`` of a process, as ``/proc/<pid>/limits`` shows them."""
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    raise AssertionError(f"no core limit for {pid}")


async def test_lanes_have_no_secret_in_their_environment_no_core_files_and_cannot_be_dumped(
    fleet: Fleet,
) -> None:
    lane = await fleet.add_lane(0)
    supervisor = fleet.supervisor(HOST)  # started with MULTIPAIR_MASTER_KEY in its environment
    key_text = fleet.master.to_base64().encode()
    assert key_text == supervisor.env["MULTIPAIR_MASTER_KEY"].encode()
    await supervisor.start()
    pid = await lane.running()
    template = parent_of(pid)

    for process in (pid, template):
        try:
            entries = environ_of(process)
        except PermissionError:
            # Not root: a non-dumpable process's environ is root's alone, which is the point.
            assert os.geteuid() != 0
            continue
        names = [entry.partition(b"=")[0] for entry in entries]
        assert [] == [name for name in names if name in SECRET_VARIABLES], process
        assert not any(key_text in entry for entry in entries), process
    assert (["0", "0"], ["0", "0"]) == (core_limits(pid), core_limits(template))

    def guarded_line() -> dict[str, Any] | None:
        return next(
            (
                line
                for line in supervisor.log_events()
                if line.get("event") == "lane process guarded"
                and line.get("instance_id") == lane.instance_id
            ),
            None,
        )

    async def logged() -> dict[str, Any] | None:
        return guarded_line()

    line = await poll_until(logged, "the lane's 'lane process guarded' log line")
    assert (False, 0) == (line["dumpable"], line["core_limit"])
    assert "success" == (await lane.purchase("g-1", 1000))["result"]  # and it still serves
    rss = rss_bytes(pid)
    print(f"\nLANE RSS {rss} bytes; template {rss_bytes(template)} bytes")
    assert rss is not None
    assert rss < DEFAULT_LANE_MEMORY_MAX / 2  # the default bound leaves a healthy lane room


async def test_a_lane_over_its_memory_bound_is_restarted_with_reason_memory(
    fleet: Fleet,
) -> None:
    lane = await fleet.add_lane(0)
    supervisor = SupervisorProcess(
        fleet.env(MULTIPAIR_LANE_MEMORY_MAX="1M"),  # any lane is far over it
        HOST,
        fleet.tmp_path / "supervisor-memory.log",
    )
    fleet.supervisors.append(supervisor)
    await supervisor.start()
    first = await lane.next_event("lane_started")
    crashed = await lane.next_event("lane_crashed", pid=first["pid"])
    again = await lane.next_event("lane_started", restarts=1)
    assert again["pid"] != first["pid"]

    async def last_exit() -> str | None:
        return (await lane.state()).get("last_exit")

    reason = await poll_until(last_exit, "last_exit in the lane's state")
    assert reason.startswith("memory: "), reason
    assert crashed["signal"] is not None or crashed["exit_code"] is not None
    over = [
        line
        for line in supervisor.log_events()
        if line.get("event") == "lane over its memory bound: stopping it"
    ]
    assert over, supervisor.logs()
    assert (lane.instance_id, 1024 * 1024) == (over[0]["instance_id"], over[0]["memory_max"])
    assert over[0]["rss_bytes"] > 1024 * 1024
