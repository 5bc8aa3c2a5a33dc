"""``multipair simulate``: virtual terminals for demos and tests (no Redis needed)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import orjson

from multipair.cli._base import Subparsers
from multipair.logs import configure_logging

__all__ = ["add_simulate_parser"]


def add_simulate_parser(subparsers: Subparsers) -> None:
    """Register ``multipair simulate``."""
    parser = subparsers.add_parser(
        "simulate",
        help="run virtual EFTPOS terminals (SPI over websockets) and a device-address service",
        description=(
            "Run N virtual EFTPOS terminals in one process, each on its own websocket port, "
            "with a JSON control API and the device-address service (PROTOCOL.md §6.1). "
            "Stops cleanly on SIGTERM or Ctrl-C."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Importing the simulator costs most of a second; only its help needs it.
    parser.epilog_factory = _epilog
    parser.add_argument("--terminals", type=int, default=1, metavar="N", help="how many (1)")
    parser.add_argument("--host", default="127.0.0.1", help="websocket listen host (127.0.0.1)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        metavar="P",
        help="terminal i listens on P+i; 0 (default) picks free ports",
    )
    parser.add_argument("--manifest", type=Path, help="write a JSON manifest of every terminal")
    parser.add_argument(
        "--state-dir", type=Path, help="keep each terminal's pairing and history here"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve wss:// with a self-signed certificate (written next to the manifest)",
    )
    parser.add_argument(
        "--pairing",
        default="auto",
        metavar="auto|delay:SECONDS|manual",
        help="who confirms pairing on the terminal: at once, after a delay, or the control API",
    )
    parser.add_argument("--control-host", default="127.0.0.1", help="control API host")
    parser.add_argument("--control-port", type=int, default=0, help="control API port (free)")
    parser.add_argument(
        "--device-address-port", type=int, default=0, help="device-address service port (free)"
    )
    parser.add_argument(
        "--device-api-key",
        help="require exactly this ASM-MSP-DEVICE-ADDRESS-API-KEY (default: any non-empty key)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # the global --json (before the subcommand) counts too
        help="print the manifest as one JSON line on stdout",
    )
    parser.set_defaults(handler=_simulate)


def _epilog() -> str:
    from multipair.simulator.rules import RULES_HELP

    return (
        RULES_HELP + "\n\ncontrol API: GET /terminals, GET /terminals/<serial>, "
        "POST /terminals/<serial>/{outcome,card-delay,pairing/confirm,pairing/reject,"
        "pairing/mode,drop,refuse,key-rollover,battery,inject,unpair,spi-token,options,"
        "device-address}"
    )


def _simulate(args: argparse.Namespace) -> int:
    from multipair.simulator.rules import parse_pairing_mode

    if args.terminals < 0:
        print("multipair simulate: --terminals must be >= 0", file=sys.stderr)
        return 2
    try:
        parse_pairing_mode(args.pairing)
    except ValueError as exc:
        print(f"multipair simulate: {exc}", file=sys.stderr)
        return 2
    configure_logging(level=logging.getLevelNamesMapping()[args.log_level.upper()])
    return asyncio.run(_run_simulator(args))


async def _run_simulator(args: argparse.Namespace) -> int:
    from multipair.simulator import Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    manifest: Path | None = args.manifest
    cert_dir = manifest.parent if manifest is not None else args.state_dir
    async with Simulator(
        args.terminals,
        host=args.host,
        base_port=args.base_port,
        state_dir=args.state_dir,
        tls=args.tls,
        cert_dir=cert_dir,
        pairing=args.pairing,
        control_host=args.control_host,
        control_port=args.control_port,
        device_address_port=args.device_address_port,
        device_api_key=args.device_api_key,
    ) as sim:
        if manifest is not None:
            sim.write_manifest(manifest)
        if args.json:
            sys.stdout.write(orjson.dumps(sim.manifest()).decode() + "\n")
        else:
            print(f"control API      {sim.control_url}")
            print(f"device address   {sim.device_address_url}")
            if sim.cert_path is not None:
                print(f"certificate      {sim.cert_path}")
            for t in sim.terminals:
                print(f"{t.serial:<16} {t.ws_url}")
        sys.stdout.flush()
        await stop.wait()
    return 0
