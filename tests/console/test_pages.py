"""The console in a real browser (headless Chromium) over real lanes, supervisor and simulator.

The page lists every lane; a ``kill -9`` of a lane shows it restarting and
connected again with no reload; the Restart button restarts the lane; a lane
unpaired and paired again from its page shows the confirmation code and
completes. Screenshots go to the test's tmp folder; with
``MULTIPAIR_SCREENSHOTS=DIR`` the lanes page is also saved as
``DIR/console.png`` (how docs/console.png is made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.console.helpers import TOKEN, Browser, ConsoleProcess
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane, kill9

APPROVE = 1000
DECLINE = 1051


async def _row(browser: Browser, lane: Lane, column: str) -> str | None:
    return await browser.text(f'tr[data-id="{lane.instance_id}"] td[data-col="{column}"]')


async def _open(browser: Browser, console: ConsoleProcess, path: str = "/") -> None:
    """Log in with the printed link, then open ``path``; wait until the feed is live."""
    await browser.get(f"{console.url}/?token={TOKEN}")
    if path != "/":
        await browser.get(console.url + path)

    async def live() -> bool:
        return await browser.text("#live") == "live"

    await poll_until(live, "the page's live feed")


async def test_the_lanes_page_lists_every_lane_live(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess, browser: Browser, tmp_path: Path
) -> None:
    await lanes[0].purchase("shop-1", APPROVE)
    await lanes[1].purchase("shop-2", DECLINE)
    await _open(browser, console)
    assert "/" == await browser.js("return location.pathname + location.search"), (
        "the token left the address bar"
    )

    async def listed() -> list[str] | None:
        ids: list[str] = await browser.js(
            "return [...document.querySelectorAll('#lanes tbody tr')].map(r => r.dataset.id)"
        )
        return ids if len(ids) == len(lanes) else None

    assert sorted(lane.instance_id for lane in lanes) == sorted(
        await poll_until(listed, "every lane")
    )
    for lane in lanes:
        assert "paired_connected" == await _row(browser, lane, "status")
        assert "console-host" == await _row(browser, lane, "host")
        assert (await lane.state())["pid"] == await _row(browser, lane, "pid")
    assert ("shop-1", "success") == (
        await _row(browser, lanes[0], "tx"),
        await _row(browser, lanes[0], "result"),
    )
    assert "failed" == await _row(browser, lanes[1], "result")
    # A purchase made while the page is open shows up without a reload.
    await browser.js("window.notReloaded = true")
    await lanes[2].purchase("shop-3", APPROVE)

    async def shown() -> bool:
        return await _row(browser, lanes[2], "tx") == "shop-3"

    await poll_until(shown, "the new purchase in the table")
    assert await browser.js("return window.notReloaded === true")
    await browser.js(
        "document.querySelectorAll('.flash').forEach(n => n.classList.remove('flash'))"
    )
    shot = await browser.screenshot(tmp_path / "screenshots" / "lanes.png", fit=True)
    assert shot.stat().st_size > 10_000
    wanted = os.environ.get("MULTIPAIR_SCREENSHOTS")
    if wanted:
        shutil.copyfile(shot, Path(wanted) / "console.png")


async def test_a_killed_lane_shows_restarting_and_connected_again_without_a_reload(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess, browser: Browser, tmp_path: Path
) -> None:
    victim = lanes[1]
    await _open(browser, console)

    async def connected() -> bool:
        return await _row(browser, victim, "status") == "paired_connected"

    await poll_until(connected, "the victim connected")
    old_pid = (await victim.state())["pid"]
    # Every status the cell takes, recorded by the page itself (no polling gaps).
    await browser.js(
        """
        window.notReloaded = true;
        window.seen = [];
        const row = document.querySelector(`tr[data-id="${arguments[0]}"]`);
        const note = () => window.seen.push(
            row.querySelector('[data-col="status"]').textContent + '/' +
            row.querySelector('[data-col="pid"]').textContent);
        new MutationObserver(note).observe(row, {subtree: true, childList: true});
        """,
        victim.instance_id,
    )
    mark = await victim.mark()
    kill9(int(old_pid))
    new_pid = await victim.running(after=mark, previous=int(old_pid))

    async def back() -> bool:
        return (
            await _row(browser, victim, "status") == "paired_connected"
            and await _row(browser, victim, "pid") == str(new_pid)
            and await _row(browser, victim, "restarts") == "1"
        )

    await poll_until(back, "the victim back, under its new pid, one restart counted")
    recorded: list[str] = await browser.js("return window.seen")
    # Repeats (the uptime ticking) say nothing: keep each change once.
    seen = [s for i, s in enumerate(recorded) if i == 0 or recorded[i - 1] != s]
    assert await browser.js("return window.notReloaded === true"), "the page was not reloaded"
    assert f"paired_connected/{new_pid}" == seen[-1], seen
    # After the kill it showed other states (restarting, starting, connecting), each
    # pushed as it happened, and never "connected" before the new process said so.
    down_at = next(i for i, s in enumerate(seen) if not s.startswith("paired_connected/"))
    back_at = seen.index(f"paired_connected/{new_pid}", down_at)
    assert all(not s.startswith("paired_connected/") for s in seen[down_at:back_at]), seen
    for other in (lanes[0], lanes[2]):
        assert "0" == await _row(browser, other, "restarts")
    await browser.screenshot(tmp_path / "screenshots" / "after-kill.png")


async def test_the_restart_button_restarts_the_lane(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess, browser: Browser, tmp_path: Path
) -> None:
    lane = lanes[0]
    await _open(browser, console, f"/lanes/{lane.instance_id}")

    async def shown() -> str | None:
        status = await browser.text('#state [data-fact="status"]')
        return status if status == "paired_connected" else None

    await poll_until(shown, "the lane's state")
    old_pid = int((await lane.state())["pid"])
    assert str(old_pid) == await browser.text('#state [data-fact="pid"]')
    mark = await lane.mark()
    await browser.click('[data-action="restart"]')
    question = await browser.confirm()
    assert "Restart" in question
    new_pid = await lane.running(after=mark, previous=old_pid)
    started = await lane.next_event("lane_started", after=mark)
    assert 1 == started["restarts"]

    async def updated() -> bool:
        return (
            await browser.text('#state [data-fact="pid"]') == str(new_pid)
            and await browser.text('#state [data-fact="status"]') == "paired_connected"
        )

    await poll_until(updated, "the page showing the new process")
    events = await browser.js(
        "return [...document.querySelectorAll('#events li')].map(li => li.dataset.type)"
    )
    assert "lane_started" in events
    assert "console-host" in (await browser.text("#action-result") or "")
    await browser.screenshot(tmp_path / "screenshots" / "lane.png")


async def test_unpair_then_pair_from_the_page_shows_the_code_and_completes(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess, browser: Browser, tmp_path: Path
) -> None:
    """The simulator confirms pairings on its side by itself (its ``auto`` mode)."""
    lane = lanes[2]
    await _open(browser, console, f"/lanes/{lane.instance_id}")

    async def status(word: str) -> bool:
        return await browser.text('#state [data-fact="status"]') == word

    await poll_until(lambda: status("paired_connected"), "the lane connected")
    await browser.click('[data-action="unpair"]')
    assert "Unpair" in await browser.confirm()
    await poll_until(lambda: status("unpaired"), "the lane unpaired", timeout=30)
    assert "unpaired" == (await lane.state())["status"]

    mark = await lane.mark()
    await browser.click('[data-action="pair"]')
    assert "Pair" in await browser.confirm()
    awaiting = await lane.next_event("pairing", after=mark, state="awaiting_confirmation")
    code: str = awaiting["confirmation_code"]
    assert code

    async def code_shown() -> bool:
        return await browser.text("#pair-code") == code

    await poll_until(code_shown, "the confirmation code on the page")
    await browser.screenshot(tmp_path / "screenshots" / "pairing.png")
    await browser.click("#pair-confirm")
    assert code in await browser.confirm()
    await lane.next_event("pairing", after=mark, state="succeeded", timeout=30)
    await poll_until(
        lambda: status("paired_connected"), "the lane paired and connected", timeout=30
    )
    assert "Paired." == await browser.text("#pair-state")
    done = await lane.purchase("after-pairing", APPROVE)
    assert "success" == done["result"]


async def test_the_hosts_page_shows_each_supervisor_and_its_lanes(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess, browser: Browser, tmp_path: Path
) -> None:
    await _open(browser, console, "/hosts")

    async def host_row() -> str | None:
        return await browser.text('tr[data-host="console-host"] td:nth-child(2)')

    assert "live" == await poll_until(host_row, "the host's row")
    lanes_cell = await browser.text('tr[data-host="console-host"] td:nth-child(5)') or ""
    assert lanes_cell.startswith(f"{len(lanes)}: ")
    for lane in lanes:
        assert lane.instance_id[:8] in lanes_cell
    assert "Drain" == await browser.text('tr[data-host="console-host"] button')
    await browser.screenshot(tmp_path / "screenshots" / "hosts.png", fit=True)
