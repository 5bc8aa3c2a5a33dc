"""Terminal services: status, configuration, printing and who the POS is (PROTOCOL.md §7.18-7.21).

Requests that ask the terminal about itself or have it print, and the
terminal messages that answer them (plus the unsolicited battery change).
Fields are declared in wire order; the codec is :mod:`._wire`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from multipair.spi.messages._wire import wire
from multipair.spi.messages.base import FromTerminal, Request
from multipair.spi.messages.events import Event

__all__ = [
    "BatteryLevelChanged",
    "GetTerminalConfigurationRequest",
    "GetTerminalStatusRequest",
    "PrintRequest",
    "PrintResponse",
    "SetPosInfoRequest",
    "SetPosInfoResponse",
    "TerminalConfiguration",
    "TerminalStatus",
]

# ---------------------------------------------------------------------------
# POS -> terminal
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintRequest(Request):
    """``print`` (§7.20): ``payload`` is printed; ``key`` is the integrator's, passed through."""

    event: ClassVar[Event] = Event.PRINT
    id_prefix: ClassVar[str] = "print"

    key: str
    payload: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTerminalStatusRequest(Request):
    """``get_terminal_status`` (§7.18); data ``{}``."""

    event: ClassVar[Event] = Event.GET_TERMINAL_STATUS
    id_prefix: ClassVar[str] = "trmnl"


@dataclass(frozen=True, slots=True, kw_only=True)
class GetTerminalConfigurationRequest(Request):
    """``get_terminal_configuration`` (§7.19); data ``{}``. Java uses prefix ``trmnlcnfg``."""

    event: ClassVar[Event] = Event.GET_TERMINAL_CONFIGURATION
    id_prefix: ClassVar[str] = "trmnl"


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPosInfoRequest(Request):
    """``set_pos_info`` (§7.21, §13.12): who the POS is.

    ``spice_version`` (adaptor version) goes out at top level and inside
    ``other_info``; ``None`` is sent as ``null``. Read back, a missing
    ``library_language`` is ``""``.
    """

    event: ClassVar[Event] = Event.SET_POS_INFO
    id_prefix: ClassVar[str] = "prav"

    pos_version: str
    pos_vendor_id: str
    library_language: str = field(default="python", metadata=wire(read_default=""))
    library_version: str
    spice_version: str | None = field(
        default=None, metadata=wire(mirror=("other_info", "spice_version"))
    )
    device_system: str = field(default="", metadata=wire(path=("other_info", "device_system")))


# ---------------------------------------------------------------------------
# Terminal -> POS
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalStatus(FromTerminal):
    """``terminal_status`` (§7.18): ``battery_level`` is a percentage, number or numeric string."""

    status: str | None = None
    battery_level: int | None = None
    charging: bool | None = None
    success: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatteryLevelChanged(FromTerminal):
    """``battery_level_changed`` (§7.18), unsolicited."""

    battery_level: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminalConfiguration(FromTerminal):
    """``terminal_configuration`` (§7.19): the serial number and model matter to the POS."""

    success: bool | None = None
    comms_selected: str | None = None
    merchant_id: str | None = None
    pa_version: str | None = None
    payment_interface_version: str | None = None
    plugin_version: str | None = None
    serial_number: str | None = None
    terminal_id: str | None = None
    terminal_model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrintResponse(FromTerminal):
    """``print_response`` (§7.20); its id may be the terminal's own, not the request's."""

    success: bool | None = None
    error_reason: str | None = None
    error_detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPosInfoResponse(FromTerminal):
    """``set_pos_info_response`` (§7.21)."""

    success: bool | None = None
    error_reason: str | None = None
    error_detail: str | None = None
