"""``multipair reseal``: move every lane's sealed secrets from one master key to another.

Rules this command keeps (docs/runbook.md "Rotate the master key"):

- It refuses to write (exit 2) while any lane of ``mp:lanes`` has a lease: a
  running lane could roll its terminal keys and write them under the old key.
  ``--dry-run`` only reports such lanes, so the check can run before the
  hosts are drained.
- Each lane is re-sealed in one transaction (:meth:`ProfileStore.reseal`),
  also guarded against a lease taken meanwhile; a field that already opens
  under the new key is left alone, so after any failure or Ctrl-C the same
  command is simply run again.
- A lane whose sealed fields open under neither key is reported and left
  untouched; the others go on, and the command exits 1 at the end.
- Only fingerprints, lane ids and field names are printed, never a key or
  a secret. Only single-lane keys are used: it works on a Redis Cluster.
- A run that writes records the new key's fingerprint in ``mp:meta``
  (:mod:`multipair.store.meta`): from then on a host started with the old
  key refuses to run instead of crash-looping the lanes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from multipair.cli._base import (
    Context,
    ExitCode,
    Fail,
    Subparsers,
    add_global_options,
    client_command,
)
from multipair.client import AsyncClient
from multipair.exceptions import CommandError, ConfigurationError, RetryLater
from multipair.leases import DEFAULT_LEASE_TTL_MS, parse_lease
from multipair.store.meta import record_master_key
from multipair.store.profiles import SEALED_FIELDS, ProfileStore
from multipair.store.secrets_box import MasterKey

__all__ = ["LaneOutcome", "add_reseal_parser"]

PROGRESS_EVERY: Final = 100
"""Under ``--json``, a progress line on stderr every this many lanes."""
_NAMED: Final = 10
"""How many lanes (and hosts) an error line names before "and N more"."""


def add_reseal_parser(subparsers: Subparsers) -> None:
    """Register ``multipair reseal --old-key-file OLD --new-key-file NEW [--dry-run]``."""
    parser = subparsers.add_parser(
        "reseal",
        help="re-seal every lane's secrets from the old master key to a new one",
        description=(
            "Re-seal every lane's sealed fields (" + ", ".join(SEALED_FIELDS) + ") from the "
            "old master key to the new one, one transaction per lane. Refuses (exit 2) while "
            "any lane has a lease: drain and stop every host first. A field that already "
            "opens under the new key is left alone, so the command can be run again after "
            "any failure. A lane that opens under neither key is reported and left "
            "untouched (exit 1). --dry-run checks every lane and writes nothing. "
            "Prints the keys' fingerprints, never a key or a secret."
        ),
    )
    parser.add_argument(
        "--old-key-file",
        type=Path,
        required=True,
        metavar="OLD",
        help="the master key the lanes are sealed with now",
    )
    parser.add_argument(
        "--new-key-file",
        type=Path,
        required=True,
        metavar="NEW",
        help="the master key to seal them with (`multipair keygen --output NEW`)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check that every lane opens under OLD (or already NEW); change nothing",
    )
    add_global_options(parser, top=False)
    parser.set_defaults(handler=client_command(_reseal))


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneOutcome:
    """One lane's line of the report (and its object in ``--json``'s ``results``)."""

    instance_id: str
    status: str
    """``resealed`` (with ``--dry-run``: would be), ``already_new``, ``unsealed`` (nothing
    sealed: not paired), ``missing`` (no profile: removed meanwhile) or ``failed``."""
    resealed: tuple[str, ...] = ()
    already_new: tuple[str, ...] = ()
    error: str | None = None


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMED])
    return shown if len(items) <= _NAMED else f"{shown} and {len(items) - _NAMED} more"


async def _leased(client: AsyncClient, ids: list[str]) -> dict[str, str]:
    """Lane id -> host id of every lane that has a lease now (one GET per lane, pipelined)."""
    if not ids:
        return {}
    async with client.redis.pipeline(transaction=False) as pipe:
        for iid in ids:
            pipe.get(client.keys.lease(iid))
        replies: list[Any] = await pipe.execute()
    leased: dict[str, str] = {}
    for iid, raw in zip(ids, replies, strict=True):
        if raw is not None:
            lease = parse_lease(raw)
            leased[iid] = "?" if lease is None else lease.host_id
    return leased


def _running(leased: dict[str, str]) -> str:
    hosts = sorted(set(leased.values()))
    return (
        f"{len(leased)} lane(s) are running (lane leases exist): {_named(sorted(leased))} "
        f"on host(s) {_named(hosts)}"
    )


def _refusal(leased: dict[str, str]) -> str:
    return (
        f"{_running(leased)}; nothing was re-sealed. Drain every host "
        "(`multipair host drain H --wait`), stop them, check `multipair hosts` shows no "
        f"leases (a dead host's leases expire within {DEFAULT_LEASE_TTL_MS / 1000:g} s), "
        "and run this again"
    )


def _load_key(path: Path, which: str) -> MasterKey:
    try:
        return MasterKey.from_file(path)
    except ConfigurationError as exc:
        raise Fail(f"{which} key: {exc}") from None


async def _reseal(ctx: Context, client: AsyncClient) -> int:
    old = _load_key(ctx.args.old_key_file, "old")
    new = _load_key(ctx.args.new_key_file, "new")
    if old == new:
        raise Fail(
            f"--old-key-file and --new-key-file hold the same key ({old.fingerprint()}): "
            "nothing to re-seal"
        )
    dry_run: bool = ctx.args.dry_run
    store = ProfileStore(client.redis, client.keys)
    ids = await store.list_ids()
    leased = await _leased(client, ids)
    if leased and not dry_run:
        raise Fail(_refusal(leased))

    verb = "Checking" if dry_run else "Re-sealing"
    ctx.say(
        f"{verb} {len(ids)} lane(s) from master key {old.fingerprint()} (old) to "
        f"{new.fingerprint()} (new)" + (" — dry run, nothing is written" if dry_run else "")
    )
    if leased:
        ctx.note(f"warning: {_running(leased)}; a real run would refuse now")

    outcomes: list[LaneOutcome] = []
    for done, iid in enumerate(ids, start=1):
        try:
            outcome = await _reseal_lane(store, iid, old, new, dry_run=dry_run)
        except RetryLater as exc:
            raise Fail(
                f"lost Redis at lane {done} of {len(ids)} ({exc}); every lane is either wholly "
                "old or wholly new: run the same command again",
                ExitCode.UNKNOWN,
            ) from None
        outcomes.append(outcome)
        ctx.say(_lane_line(outcome, dry_run=dry_run))
        if ctx.json and done % PROGRESS_EVERY == 0:
            ctx.note(f"{done}/{len(ids)} lanes")

    if not dry_run:
        # Hosts now need the new key: record it, so one started with the old key refuses
        # to run instead of crash-looping every lane (multipair.store.meta).
        try:
            await record_master_key(client.redis, client.keys, new)
        except RetryLater as exc:
            raise Fail(
                f"lost Redis recording the new key's fingerprint ({exc}): run the same command "
                "again",
                ExitCode.UNKNOWN,
            ) from None
    statuses = Counter(o.status for o in outcomes)
    fields = sum(len(o.resealed) for o in outcomes), sum(len(o.already_new) for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if ctx.json:
        ctx.emit(
            {
                "dry_run": dry_run,
                "old_fingerprint": old.fingerprint(),
                "new_fingerprint": new.fingerprint(),
                "lanes": len(ids),
                "statuses": {name: statuses[name] for name in _STATUSES},
                "fields": {"resealed": fields[0], "already_new": fields[1]},
                "leased": len(leased),
                "errors": [{"instance_id": o.instance_id, "error": o.error} for o in failed],
                "results": outcomes,
            }
        )
    else:
        would = "would be re-sealed" if dry_run else "re-sealed"
        ctx.say(
            f"{len(ids)} lane(s): {statuses['resealed']} {would} ({fields[0]} field(s)), "
            f"{statuses['already_new']} already new, {statuses['unsealed']} with nothing "
            f"sealed (not paired), {statuses['missing']} missing, {statuses['failed']} failed"
            + ("" if dry_run else f"; hosts must now start with master key {new.fingerprint()}")
        )
    if failed:
        ctx.error_line(
            f"{len(failed)} lane(s) not re-sealed: {_named([o.instance_id for o in failed])}"
        )
        return ExitCode.FAILED
    return ExitCode.OK


_STATUSES: Final = ("resealed", "already_new", "unsealed", "missing", "failed")


async def _reseal_lane(
    store: ProfileStore, iid: str, old: MasterKey, new: MasterKey, *, dry_run: bool
) -> LaneOutcome:
    """One lane; its own failures become a ``failed`` outcome (Redis lost propagates)."""
    try:
        result = await store.reseal(iid, old, new, dry_run=dry_run)
    except CommandError as exc:
        if exc.reason == "unknown_lane":  # removed meanwhile, or a stale mp:lanes member
            return LaneOutcome(instance_id=iid, status="missing")
        # A lease taken since the check: a host was started during the re-seal.
        return LaneOutcome(instance_id=iid, status="failed", error=str(exc))
    except ConfigurationError as exc:  # opens under neither key
        return LaneOutcome(instance_id=iid, status="failed", error=str(exc))
    if result.resealed:
        status = "resealed"
    elif result.already_new:
        status = "already_new"
    else:
        status = "unsealed"
    return LaneOutcome(
        instance_id=iid,
        status=status,
        resealed=result.resealed,
        already_new=result.already_new,
    )


def _lane_line(outcome: LaneOutcome, *, dry_run: bool) -> str:
    iid = outcome.instance_id
    if outcome.status == "failed":
        return f"{iid}  FAILED: {outcome.error}"
    if outcome.status == "missing":
        return f"{iid}  no profile (removed meanwhile): skipped"
    if outcome.status == "unsealed":
        return f"{iid}  nothing sealed (not paired)"
    would = "would re-seal" if dry_run else "re-sealed"
    resealed, already = outcome.resealed, outcome.already_new
    return (
        f"{iid}  {would} {len(resealed)} ({', '.join(resealed) or '-'}), "
        f"already new {len(already)} ({', '.join(already) or '-'})"
    )
