"""Markdown tables from ``bench/results/*.json``, for ``docs/benchmarks.md``.

Not a benchmark (``make bench`` runs ``bench_*.py`` only)::

    .venv/bin/python bench/report.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _md(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(data: dict[str, Any]) -> str:
    m = data["machine"]
    p = m["packages"]
    return (
        f"{m['cores']} cores ({m['cpu_model']}), {m['memory_total_mib']} MiB, "
        f"Linux {m['kernel']}, Python {m['python']}, redis-py {p['redis']}, "
        f"websockets {p['websockets']}, cryptography {p['cryptography']}, "
        f"orjson {p['orjson']}; {m['redis_server']['version']}; "
        f"commit {str(m['git_commit'])[:10]}{' (dirty)' if m['git_dirty'] else ''}"
    )


def startup(data: dict[str, Any]) -> str:
    rows = []
    for r in data["runs"]:
        if "startup" not in r:
            reason = r.get("skipped") or r.get("failed")
            rows.append([r["n"], reason, *[""] * 11])
            continue
        s, mem = r["startup"], r["memory_idle"]
        after_run = r.get("memory_after_one_purchase_each", {})
        after = after_run.get("per_lane", {})
        after_pss: Any = after.get("pss_mib")
        if after_run and after_run.get("lane_processes") != r["n"]:
            after_pss = f"{after_pss} ({after_run.get('lane_processes')} alive)"
        idle = r["idle_cpu_percent_of_one_core"]
        complete = s["complete"]
        rows.append(
            [
                r["n"],
                "yes" if complete else f"no: {s['connected']} connected",
                s["template_ready_s"],
                s["p50_connected_s"],
                s["all_connected_s"],
                mem["per_lane"]["pss_mib"],
                mem["per_lane"]["uss_mib"],
                after_pss,
                mem["supervisor"]["pss_mib"],
                mem["template"]["pss_mib"],
                idle["lanes"] if complete else None,
                idle["supervisor"] if complete else None,
                idle["redis"] if complete else None,
            ]
        )
    return _md(
        [
            "N",
            "all up",
            "template ready s",
            "p50 connected s",
            "all connected s",
            "PSS/lane MiB",
            "USS/lane MiB",
            "PSS/lane after 1 tx",
            "supervisor PSS",
            "template PSS",
            "idle CPU % lanes",
            "supervisor",
            "Redis",
        ],
        rows,
    )


def overhead(data: dict[str, Any]) -> str:
    rows = []
    for c in data["comparison"]:
        level = c["concurrency"]
        for path in ("direct", "lanes"):
            p = next(x for x in data["phases"] if x["path"] == path and x["concurrency"] == level)
            t = p["total_ms"]
            cpu = p["cpu_ms_per_purchase"]
            if path == "direct":
                ours, client = cpu["bench"], None
            else:
                ours = cpu["lanes"] + cpu["supervisor"] + cpu["redis"]
                client = cpu["bench"]
            rows.append(
                [
                    path,
                    level,
                    t["count"],
                    t["p50"],
                    t["p95"],
                    t["p99"],
                    p["throughput_per_s"],
                    round(ours, 2),
                    cpu["simulator"],
                    client,
                    round(p["cpu_s"]["machine_busy_s"] / p["cpu_s"]["wall_s"] * 50),
                ]
            )
        r = c["ratio_lanes_over_direct"]
        rows.append(["lanes / direct", level, "", r["p50"], r["p95"], r["p99"], *[""] * 5])
    return _md(
        [
            "path",
            "concurrent",
            "n",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "purchases/s",
            "CPU ms/tx: SPI side",
            "simulator",
            "POS client",
            "machine busy %",
        ],
        rows,
    )


def crash(data: dict[str, Any]) -> str:
    rows = []
    for p in data["passes"]:
        if "results" not in p:
            rows.append([p["pass"], "failed", "", "", "", ""])
            continue
        r = p["results"]
        for label, key in (
            ("kill → paired_connected (new pid)", "kill_to_ready_ms"),
            ("kill → lane_crashed", "kill_to_crash_noticed_ms"),
            ("lane_crashed → lane_started", "crash_noticed_to_respawn_ms"),
            ("lane_started → paired_connected", "respawn_to_ready_ms"),
        ):
            s = r[key]
            rows.append([p["pass"], label, s["count"], s["p50"], s["p95"], s["p99"], s["max"]])
    return _md(["run", "interval", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)


def redis_outage(data: dict[str, Any]) -> str:
    r = data["results"]
    s = r["back_to_answered_ms"]
    rows = [
        [
            f"{data['parameters']['outage_s']:g} s × {r['outages']}",
            s["count"],
            s["p50"],
            s["p95"],
            s["p99"],
            s["max"],
            r["lane_exits"],
            r["pids_changed"],
            r["terminal_reconnects"],
            f"{r['answered']}/{r['purchases']}",
        ]
    ]
    return _md(
        [
            "outage",
            "n",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "lane exits",
            "pids changed",
            "terminal reconnects",
            "answered",
        ],
        rows,
    )


def main() -> int:
    for name, render in (
        ("startup", startup),
        ("overhead", overhead),
        ("crash", crash),
        ("redis_outage", redis_outage),
    ):
        data = _load(name)
        if data is None:
            print(f"<!-- no {name}.json -->\n")
            continue
        print(f"### {name}: `{data['command']}` ({data['started_at']})\n")
        print(render(data) + "\n")
        print(f"Machine: {machine(data)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
