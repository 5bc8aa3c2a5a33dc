"""Virtual EFTPOS terminals for developing and testing a POS without hardware.

:class:`Simulator` runs many terminals in one asyncio process, each a real
SPI peer on its own websocket port (the sans-I/O
:class:`multipair.spi.terminal.Terminal` behind a thin websocket shell), plus
the device-address service of PROTOCOL.md §6.1 and a JSON control API
(:mod:`multipair.simulator.control`). Transaction outcomes follow the table
in :mod:`multipair.simulator.rules`; the bank that writes each answer is
:mod:`multipair.simulator.bank`. The command line is ``multipair
simulate`` (:mod:`multipair.cli`).
"""

from __future__ import annotations

from multipair.simulator.rules import (
    OUTCOME_RULES,
    RULES_HELP,
    Behaviour,
    DropStep,
    PairingMode,
    behaviour_for_amount,
)
from multipair.simulator.server import Simulator, serial_for
from multipair.simulator.virtual import SimulatedTerminal

__all__ = [
    "OUTCOME_RULES",
    "RULES_HELP",
    "Behaviour",
    "DropStep",
    "PairingMode",
    "SimulatedTerminal",
    "Simulator",
    "behaviour_for_amount",
    "serial_for",
]
