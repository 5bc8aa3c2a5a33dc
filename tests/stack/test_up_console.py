"""``multipair up`` serves the web console and the supervisor's metrics (issue 15)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.helpers import MODULE, clean_env, start
from tests.poll import poll_until

READY_TIMEOUT_S = 60.0


async def _connected_lanes(http: aiohttp.ClientSession, url: str) -> bool:
    """``/metrics`` says one lane is connected."""
    async with http.get(url) as response:
        text = await response.text()
    return any(
        sample.name == "multipair_lanes"
        and sample.labels["status"] == "paired_connected"
        and sample.value == 1.0
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


async def test_up_prints_the_console_link_and_serves_metrics(tmp_path: Path) -> None:
    env = clean_env(MULTIPAIR_CONSOLE_TOKEN="up-console-token-0123456789")
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        proc = await start(
            *("--json", "up", "--simulate", "1", "--data-dir", str(tmp_path / "data")),
            *("--console-port", "0", "--metrics-port", "0", "--interval", "0.3"),
            stderr=stderr,
            env=env,
            command=MODULE,
        )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"stdout closed early; stderr: {stderr_path.read_text()}"
                running = json.loads(line)
                if running["event"] == "running":
                    break
        console_url, metrics_url = running["console_url"], running["metrics_url"]
        assert console_url.startswith("http://127.0.0.1:"), running
        assert console_url.endswith("/?token=up-console-token-0123456789"), running
        assert metrics_url.startswith("http://127.0.0.1:"), running
        assert metrics_url.endswith("/metrics"), running
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(console_url) as page:  # the link logs in, then the page
                assert 200 == page.status
                assert "multipair" in await page.text()
            base = console_url.split("?", 1)[0].rstrip("/")
            async with http.get(f"{base}/api/lanes") as response:
                lanes = (await response.json())["lanes"]
            assert ["SIM-0001"] == [lane["serial_number"] for lane in lanes]
            await poll_until(
                lambda: _connected_lanes(http, metrics_url), "one lane connected in /metrics", 30
            )
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 60)
    assert 0 == await proc.wait(), stderr_path.read_text()
