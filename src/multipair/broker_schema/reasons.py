"""Why a stream entry was refused: the fixed, machine-readable ``reason`` set.

A ``command_rejected`` event carries one of these in ``reason`` and a
sentence naming the field in ``detail``: first the reasons of malformed
entries (in the order codec.py checks them), then those of the store, then
those the lane gives for well-formed commands it cannot run now. A reason,
once published, keeps its meaning for good (docs/broker-schema.md,
"Rejection reasons").
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason"]


class Reason(StrEnum):
    """Reasons the broker schema and the store give (codec.py states the order of checks)."""

    BAD_ENTRY = "bad_entry"
    """The stream entry is not exactly the fields ``v`` and ``body``."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """``v`` is not a schema version this code reads (only ``1``)."""
    OVERSIZE = "oversize"
    """``body`` is longer than 64 KiB."""
    NOT_JSON = "not_json"
    """``body`` is not UTF-8 JSON."""
    NOT_AN_OBJECT = "not_an_object"
    """``body`` is JSON but not an object."""
    DUPLICATE_KEY = "duplicate_key"
    """``body`` has the same key twice in one object (JSON readers disagree on which counts)."""
    UNKNOWN_TYPE = "unknown_type"
    """``type`` names no command (or event) of this schema version."""
    UNKNOWN_FIELD = "unknown_field"
    """The body has a field the command does not define (refused: a typo must not be ignored)."""
    MISSING_FIELD = "missing_field"
    """A required field is absent."""
    WRONG_TYPE = "wrong_type"
    """A field has the wrong JSON type (a string for cents, ``12.5`` cents, ``true`` cents...)."""
    INVALID_VALUE = "invalid_value"
    """A field has the right type but a value outside its rules (negative cents, bad pos_ref_id)."""
    EXPIRED = "expired"
    """The command's ``expires_at`` has passed; it was not run."""
    INVALID_INSTANCE_ID = "invalid_instance_id"
    """A lane id that is not a UUID."""
    UNKNOWN_LANE = "unknown_lane"
    """No lane has this instance id."""
    LANE_EXISTS = "lane_exists"
    """A lane with this instance id already exists."""

    # Reasons the lane gives for a well-formed command it will not run.
    NOT_ALLOWED = "not_allowed"
    """The lane's state does not allow it now (not paired, not idle, nothing to cancel...)."""
    DUPLICATE_POS_REF_ID = "duplicate_pos_ref_id"
    """Another command already used this pos_ref_id; a new transaction needs a new one."""
    TERMINAL_TIMEOUT = "terminal_timeout"
    """The terminal did not answer in time; the command did not take effect."""
    TERMINAL_UNAVAILABLE = "terminal_unavailable"
    """The terminal was not connected when the command's turn came; nothing was sent."""
    REDIS_UNAVAILABLE = "redis_unavailable"
    """Redis could not keep the transaction's record safe (replicas did not confirm it in
    time); nothing was sent, and the same command (same ``command_id``) may be sent again."""
    DUPLICATE_COMMAND_ID = "duplicate_command_id"
    """This command_id was already used by another command of the lane."""
    BUSY = "busy"
    """Another pairing is queued or running on the lane; this ``pair`` was not queued."""
    INTERNAL_ERROR = "internal_error"
    """Handling the entry failed on our side (a bug): refused, dead-lettered; the lane goes on."""
    POISON_ENTRY = "poison_entry"
    """The lane took this entry several times and never answered it; dead-lettered, not run."""
    UNKNOWN_REQUEST = "unknown_request"
    """A ``bill_details`` / ``open_tables`` names a ``request_id`` the lane is not waiting on:
    never asked, already answered, or expired (the terminal got the error reply)."""
