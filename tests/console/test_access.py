"""The console's door: the token for every page and action, a header for actions (no browser).

``multipair console`` runs as its own process over a real supervisor's
lanes; these requests come from a plain HTTP client, as a script or a
hostile page would send them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.console.helpers import TOKEN, ConsoleProcess
from tests.poll import poll_until
from tests.supervisor.helpers import Fleet, Lane

ANOTHER_TOKEN = "not-the-console-token-0123456789"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe: keep cookies for an IP address host (127.0.0.1), as browsers do.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def _status(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with http.request(method, url, allow_redirects=False, **kwargs) as response:
        return response.status


async def test_every_page_stream_and_action_needs_the_token(
    lanes: list[Lane], console: ConsoleProcess, http: aiohttp.ClientSession
) -> None:
    base, iid = console.url, lanes[0].instance_id
    wrong = {"Authorization": f"Bearer {ANOTHER_TOKEN}"}
    for method, path in (
        ("GET", "/"),
        ("GET", "/hosts"),
        ("GET", f"/lanes/{iid}"),
        ("GET", "/api/session"),
        ("GET", "/api/lanes"),
        ("GET", f"/api/lanes/{iid}"),
        ("GET", "/api/hosts"),
        ("GET", "/api/stream"),
        ("POST", f"/api/lanes/{iid}/restart"),
        ("POST", f"/api/lanes/{iid}/stop"),
        ("POST", "/api/hosts/console-host/drain"),
    ):
        assert 401 == await _status(http, method, base + path), (method, path)
        assert 401 == await _status(http, method, base + path, headers=wrong), (method, path)
    assert 401 == await _status(http, "GET", f"{base}/?token={ANOTHER_TOKEN}")
    async with http.get(base + "/") as response:
        page = await response.text()
    assert 401 == response.status
    assert 'action="/login"' in page, "a page without the token answers with the login form"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    # The stylesheet and script are package files, no data: the login form needs its style.
    assert 200 == await _status(http, "GET", base + "/static/console.css")
    assert 404 == await _status(http, "GET", base + "/static/lanes.html")
    # Nothing happened to the lane.
    assert "0" == (await lanes[0].state())["restarts"]


async def test_the_printed_link_sets_a_private_cookie_and_leaves_the_address_bar(
    lanes: list[Lane], console: ConsoleProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{console.url}/?token={TOKEN}", allow_redirects=False) as response:
        assert 303 == response.status
        assert "/" == response.headers["Location"]
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    async with http.get(f"{console.url}/api/lanes") as response:
        assert 200 == response.status
        listed = await response.json()
    assert sorted(lane.instance_id for lane in lanes) == sorted(
        row["instance_id"] for row in listed["lanes"]
    )
    assert 200 == await _status(http, "GET", f"{console.url}/lanes/{lanes[0].instance_id}")


async def test_the_login_form_takes_the_token_and_refuses_another(
    lanes: list[Lane], console: ConsoleProcess, http: aiohttp.ClientSession
) -> None:
    form = {"token": ANOTHER_TOKEN, "next": "/hosts"}
    assert 401 == await _status(http, "POST", f"{console.url}/login", data=form)
    form = {"token": TOKEN, "next": "//evil.example/"}
    async with http.post(f"{console.url}/login", data=form, allow_redirects=False) as response:
        assert (303, "/") == (response.status, response.headers["Location"])
    assert 200 == await _status(http, "GET", f"{console.url}/hosts")


async def test_an_action_with_the_cookie_alone_is_refused_and_with_the_header_taken(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess, http: aiohttp.ClientSession
) -> None:
    """CSRF: another site's form carries the cookie, never a header only the page can read."""
    await _status(http, "GET", f"{console.url}/?token={TOKEN}")  # the cookie
    lane = lanes[0]
    restart = f"{console.url}/api/lanes/{lane.instance_id}/restart"
    assert 403 == await _status(http, "POST", restart)
    async with http.get(f"{console.url}/api/session") as response:
        session = await response.json()
    header = {session["csrf_header"]: session["csrf"]}
    hostile = {**header, "Origin": "http://evil.example"}
    assert 403 == await _status(http, "POST", restart, headers=hostile)
    assert 403 == await _status(http, "POST", restart, headers={session["csrf_header"]: "0" * 64})
    assert "0" == (await lane.state())["restarts"], "nothing refused may act"

    mark = await lane.mark()
    async with http.post(restart, headers=header) as response:
        assert 200 == response.status, await response.text()
        done = await response.json()
    assert ("restart", "console-host", True) == (
        done["action"],
        done["owner"],
        done["control_sent"],
    )
    await lane.next_event("lane_started", after=mark, restarts=1)

    # A script uses the bearer header: no cookie, no CSRF value needed.
    async with aiohttp.ClientSession() as script:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        stop = f"{console.url}/api/lanes/{lanes[1].instance_id}/stop"
        assert 200 == await _status(script, "POST", stop, headers=bearer)
    await lanes[1].next_event("lane_stopped")
    profile = await fleet.profiles.get(lanes[1].instance_id)
    assert not profile.enabled, "stop is remembered in the profile, as `lane stop` does"


async def test_hosts_can_be_drained_and_accept_lanes_again(
    fleet: Fleet, lanes: list[Lane], console: ConsoleProcess
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=bearer) as script:
        async with script.post(f"{console.url}/api/hosts/console-host/drain") as response:
            assert 200 == response.status, await response.text()

        async def draining() -> bool:
            entry = await fleet.host_entry("console-host")
            return entry is not None and entry["draining"] is True

        await poll_until(draining, "the host draining")

        async def hosts() -> list[dict[str, object]] | None:
            async with script.get(f"{console.url}/api/hosts") as response:
                found: list[dict[str, object]] = (await response.json())["hosts"]
            return found if found and found[0]["state"] == "draining" else None

        (host,) = await poll_until(hosts, "the console showing the drain")
        assert "console-host" == host["host_id"]
        async with script.post(f"{console.url}/api/hosts/console-host/accept") as response:
            assert 200 == response.status
        async with script.post(f"{console.url}/api/hosts/nobody/drain") as response:
            assert 409 == response.status
