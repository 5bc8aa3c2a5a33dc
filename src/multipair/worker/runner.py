"""Transaction commands, one at a time in stream order: the lane's runner.

The runner takes commands (and orphaned records to recover) from the FIFO
the intake fills, claims each ``command_id``, asks
:func:`~multipair.worker.admission.admit` what to do with it, and acts:
starts the transaction, resumes it from the terminal, answers from its
record, or refuses it. It waits for the outcome the session's events bring
(:mod:`multipair.worker.session_events`); pairing, lookups, printing and
configuration run here too. The lane's module docstring states the
guarantees (before send, persist before use, one pairing).

**Confirmed before send** (issue 19, docs/deploy-ha.md "Durable writes").
With ``MULTIPAIR_REDIS_MIN_REPLICAS`` above 0, a new request is sent only
once its record (and the ``command_id`` claim) is confirmed on that many
replicas (:meth:`Runner.confirm_before_send`): else a failover could
promote a replica without it, and the command, delivered again, would be
sent a second time. Each ``WAIT`` lasts up to ``MULTIPAIR_REDIS_WAIT_MS``;
the lane asks again for up to :data:`~multipair.store.durable.CONFIRM_BEFORE_SEND_S`
(a lagging replica catching up), then refuses the command with the
retryable ``redis_unavailable``: nothing was sent, the record stays
``requested``, and the same command sent again (same ``command_id``) runs
it then, once (its claim and record say "the same money command, never
sent"). ``command_accepted`` is published only after that confirmation
(never in the record's own write), so a command gets ``command_accepted``
or ``command_rejected``, not both.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import structlog

from multipair import broker_schema as bs
from multipair.exceptions import CommandError, LocalProtocolError
from multipair.logs import get_logger
from multipair.spi import messages as m
from multipair.spi import pos as spi
from multipair.store.durable import CONFIRM_BEFORE_SEND_S
from multipair.store.profiles import PayAtTableConfig
from multipair.store.transactions import TxRecord
from multipair.worker.admission import (
    AnswerFromRecord,
    Claim,
    Decision,
    Readiness,
    Refuse,
    Resume,
    Run,
    WaitForTerminal,
    admit,
    can_start_now,
    expired,
    judge_claim,
    pairing_limit,
    refusal,
)
from multipair.worker.entries import Entry
from multipair.worker.pat_replies import table_request
from multipair.worker.redis_wait import Stopping, first
from multipair.worker.translate import (
    TX_TYPES,
    claim_of,
    last_tx_event,
    lookup_event,
    lookup_fields_from_record,
    new_record,
    print_event,
    spi_request,
)

if TYPE_CHECKING:
    from multipair.worker.lane import Lane

__all__ = ["STOP", "UNSENT_WAIT_S", "Runner"]

log = get_logger("multipair.worker.lane")  # the lane's log lines, as they always were

STOP: Final = object()
"""Queue sentinel: the runner returns."""
UNSENT_WAIT_S: Final = 30.0
"""How long a new transaction waits for the terminal link before it is refused."""


def _verdict(command: bs.Command, entry_id: str, prior: bytes | None) -> Claim:
    """:func:`judge_claim`, with a refusal raised."""
    verdict = judge_claim(command, entry_id, prior)
    if isinstance(verdict, Refuse):
        raise verdict.error
    return verdict


class Runner:
    """The lane's transaction commands, one at a time."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    async def runner_loop(self) -> None:
        """Run queued transaction commands (and orphans) one at a time, until stopped."""
        while not self.lane.stopped.is_set():
            item = await self.lane.tx_queue.get()
            if item is STOP:
                return
            if self.lane.draining.is_set():
                continue  # left pending: the next owner of the lane replays it
            self.lane.idle.clear()
            try:
                await self.run_item(item)
            finally:
                self.lane.idle.set()

    async def run_item(self, item: object) -> None:
        """Run one queued command (or recover one orphaned record); answer how it failed."""
        if isinstance(item, TxRecord):
            await self._recover_orphan(item)
            return
        assert isinstance(item, Entry)
        entry = item
        command = entry.command
        structlog.contextvars.bind_contextvars(command_id=command.command_id)
        pos_ref_id = getattr(command, "pos_ref_id", None)
        try:
            await self._run_transaction_command(entry)
        except Stopping:
            log.info("stopping with the command unfinished; it stays pending")
        except TimeoutError as exc:
            await self.lane.intake.refuse(entry, refusal(exc), pos_ref_id=pos_ref_id)
        except CommandError as exc:
            await self.lane.intake.refuse(entry, exc, pos_ref_id=pos_ref_id)
        except LocalProtocolError as exc:  # includes InvalidRequest
            await self.lane.intake.refuse(entry, refusal(exc), pos_ref_id=pos_ref_id)
        except Exception as exc:
            # Our bug, met by this command (see _dispatch): contained when that
            # is safe, else the lane ends and its successor takes over.
            if self.lane.must_end(exc):
                raise
            if entry.acked:  # answered already: nothing to refuse
                log.error("a command failed after it was answered", exc_info=exc)
            elif await self._may_refuse(entry):
                await self.lane.intake.contain(entry.entry_id, entry.fields, exc)
            else:
                raise
        finally:
            self.lane.tx_entry = None
            self.lane.record = None
            if self.lane.pair_entry is entry:
                self.lane.pair_entry = None  # answered: the next pair may come
            structlog.contextvars.unbind_contextvars("command_id", "pos_ref_id")

    async def _may_refuse(self, entry: Entry) -> bool:
        """Whether a transaction command that failed unexpectedly may still be refused.

        Only while nothing of it is under way: the session idle and no record
        of it. Its record means it may have reached the terminal: the lane
        ends instead, and its successor recovers the outcome from the
        terminal (DESIGN.md "No lost outcome"); a refusal would be a lie.
        """
        if self.lane.session.flow is not spi.SpiFlow.IDLE:
            return False
        command = entry.command
        pos_ref_id = getattr(command, "pos_ref_id", None)
        if command.records_tx and pos_ref_id:
            record = await self.lane.deps.txs.get(self.lane.instance_id, pos_ref_id)
            if record is not None and record.command_id == command.command_id:
                return False
        return True

    async def _run_transaction_command(self, entry: Entry) -> None:
        command = entry.command
        if expired(command, self.lane.now()):
            raise CommandError(bs.Reason.EXPIRED, "the command expired before it could run")
        has_record = command.records_tx and getattr(command, "pos_ref_id", None)
        if command.type in TX_TYPES and has_record:
            await self._run_money(entry, claimed=False)  # claims in its first write
            return
        redelivered = await self.claim_command_id(entry)
        session = self.lane.session
        match command:
            case bs.Settle() if redelivered:
                # A settle has no record to tell whether it reached the terminal
                # before the lane that took it died; sending it again could settle
                # twice. Like a settlement cut by a drop (§7.14) its outcome is
                # unknown, and a settlement_enquiry tells.
                log.warning("settle delivered again after a restart: not sent again")
                unknown = self.lane.event(
                    bs.Settlement,
                    command_id=command.command_id,
                    result="unknown",
                    error_reason="LANE_RESTARTED",
                    error_detail=(
                        "the lane restarted after taking this settle, which may have "
                        "reached the terminal; it was not sent again: run a "
                        "settlement_enquiry"
                    ),
                )
                await self.lane.intake.answer(entry, unknown)
            case bs.Pair():
                await self._run_pairing(entry)
            case bs.Unpair():
                await self.lane.step(session.unpair)
                await self.lane.intake.answer(entry, self.accepted(command))
            case bs.SetConfig():
                changes = {
                    k: v
                    for k in (
                        "print_merchant_copy",
                        "prompt_for_customer_copy",
                        "signature_flow_on_eftpos",
                    )
                    if (v := getattr(command, k)) is not None
                }
                self.lane.profile = await self.lane.until_redis(
                    partial(self.lane.deps.profiles.update, self.lane.instance_id, **changes)
                )
                await self.lane.intake.answer(entry, self.accepted(command))
            case bs.SetTableConfig():
                await self._set_table_config(command)
                await self.lane.intake.answer(entry, self.accepted(command))
            case bs.GetTransaction():
                ref = command.pos_ref_id
                result = await self.lane.control.ask(
                    spi.TransactionLookupResult, lambda now: session.lookup_transaction(ref, now)
                )
                await self.lane.intake.answer(
                    entry, lookup_event(self.lane.event_base(command), ref, result.response)
                )
            case bs.GetLastTransaction():
                last = await self.lane.control.ask(
                    spi.LastTransactionResult, session.lookup_last_transaction
                )
                await self.lane.intake.answer(
                    entry, last_tx_event(self.lane.event_base(command), last.response)
                )
            case bs.Print():
                key, payload = command.key, command.payload
                answer = await self.lane.control.ask(
                    m.PrintResponse, lambda now: session.print_receipt(key, payload, now)
                )
                await self.lane.intake.answer(
                    entry, print_event(self.lane.event_base(command), key, answer)
                )
            case _ if command.type in TX_TYPES:
                await self._run_money(entry, claimed=True)
            case _:
                raise LocalProtocolError(f"{command.type} is not supported by this lane yet")

    async def _set_table_config(self, command: bs.SetTableConfig) -> None:
        """Store the changed pay-at-table config in the profile, then give it to the session
        (which pushes it to a connected terminal, §7.23)."""
        lane = self.lane
        profiles, iid = lane.deps.profiles, lane.instance_id
        current = (await lane.until_redis(partial(profiles.get, iid))).pat
        config = (current or PayAtTableConfig()).updated(command)
        lane.profile = await lane.until_redis(partial(profiles.update, iid, pat=config))
        lane.pat.config = config
        request = table_request(config)
        await lane.step(lambda now: lane.session.set_table_config(request, now))

    def accepted(self, command: bs.Command) -> bs.Event:
        """The ``command_accepted`` event of ``command``."""
        return self.lane.event(
            bs.CommandAccepted,
            command_id=command.command_id,
            command_type=command.type,
            pos_ref_id=getattr(command, "pos_ref_id", None),
        )

    async def _run_pairing(self, entry: Entry) -> None:
        """Pair, and wait for the end; at the pair's deadline the lane cancels it itself.

        Whoever sent the ``pair`` may have given up by then (a CLI that timed
        out, a POS that went away): the pairing must not hold the lane, and
        the terminal's screen, for longer than they asked.
        """
        loop = asyncio.get_running_loop()
        command = entry.command
        self.lane.pairing_done = loop.create_future()
        self.lane.tx_entry = entry
        try:
            await self.lane.step(self.lane.session.pair)
            await self.lane.publish_event(self.accepted(command))
            limit, why = pairing_limit(command.expires_at, self.lane.now())
            try:
                async with asyncio.timeout(limit):
                    finished = await self.lane.pairing_done
            except TimeoutError:
                message = f"Pairing cancelled: {why}."
                log.warning("pairing cancelled by the lane", why=why)
                with contextlib.suppress(LocalProtocolError):  # it ended meanwhile
                    await self.lane.step(
                        lambda now: self.lane.session.pair_cancel(now, message=message)
                    )
                finished = spi.PairingFinished(success=False, message=message, cancelled=True)
        finally:
            self.lane.pairing_done = None
        log.info("pairing finished", success=finished.success)
        await self.lane.intake.ack(entry)

    async def _run_money(self, entry: Entry, *, claimed: bool) -> None:
        """A transaction with a record: idempotent by command_id and pos_ref_id.

        Everything that could refuse the command is checked before the record
        is written, so a refused command never leaves a record that would block
        its pos_ref_id.

        The common case, a new transaction on a ready, idle lane, takes one
        write before the request goes out (:meth:`TxStore.begin`: the
        command_id claim, the record and ``command_accepted``; with replicas to
        wait for, ``command_accepted`` follows once the record is confirmed, so
        a command refused for an unconfirmed record was never accepted). Anything else
        (a repeated command_id or pos_ref_id, a redelivery, a terminal not
        ready) takes the step-by-step path, which reads the record first and
        asks :func:`~multipair.worker.admission.admit` what to do.
        """
        lane = self.lane
        command = entry.command
        iid = lane.instance_id
        tx_type = TX_TYPES[command.type]
        pos_ref_id: str | None = getattr(command, "pos_ref_id", None)
        if pos_ref_id:
            structlog.contextvars.bind_contextvars(pos_ref_id=pos_ref_id)
        try:
            request = spi_request(command, lane.profile)  # InvalidRequest: refused here
        except LocalProtocolError:
            if not claimed:  # the claim comes first: a reused command_id is refused as such
                await self.claim_command_id(entry)
            raise
        record: TxRecord | None = None
        begun_created = False
        # With replicas to wait for, command_accepted is published only once the
        # record is confirmed (:meth:`confirm_before_send`): a command gets
        # command_accepted or command_rejected, never both.
        accept_later = lane.writer.replicas is not None
        if not claimed and can_start_now(Readiness.of(lane.session)):
            assert pos_ref_id is not None
            # One write id for every try: a retry after a lost reply gets the
            # first reply, never a second command_accepted.
            begun = await lane.until_redis(
                partial(
                    lane.deps.txs.begin,
                    iid,
                    new_record(command, pos_ref_id),
                    claim=claim_of(command, entry.entry_id),
                    publish_to=lane.keys.events(iid),
                    publish_fields={} if accept_later else bs.encode_event(self.accepted(command)),
                    maxlen=lane.deps.settings.events_maxlen,
                    ticket=lane.writer.ticket(),
                )
            )
            if begun.prior_claim is not None:
                _verdict(command, entry.entry_id, begun.prior_claim)  # refuses a reuse
            else:
                record, begun_created = begun.record, begun.created
            claimed = True
        if not claimed:
            await self.claim_command_id(entry)
        decision: Decision = Run()  # recorded and accepted in one write (begun_created)
        if not begun_created:
            decision, record = await self._admit(command, record)
        match decision:
            case Refuse():
                raise decision.error
            case AnswerFromRecord():
                assert record is not None
                await lane.intake.answer(entry, self._answer_from_record(command, record))
                return
        if not isinstance(decision, Resume):
            await self.confirm_before_send()  # refused here: nothing was sent
        lane.record = record
        lane.tx_done = asyncio.get_running_loop().create_future()
        lane.tx_entry = entry
        if isinstance(decision, Resume):
            assert pos_ref_id is not None
            log.info("resuming an in-flight transaction from the terminal")
            await lane.step(lambda now: lane.session.recover(pos_ref_id, tx_type, now))
        else:
            if accept_later or not begun_created:
                await lane.publish_event(self.accepted(command))
            await lane.step(lambda now: lane.session.start_transaction(request, now))
        try:
            done = await self.until_stopped(lane.tx_done)
        finally:
            lane.tx_done = None
        lane.primary.finish(record or lane.record, done, entry.entry_id)
        if not entry.acked:  # normally acknowledged with the outcome, in one write
            await lane.intake.ack(entry)

    async def confirm_before_send(self) -> None:
        """Return once the lane's writes so far are on enough replicas; else refuse, retryable.

        One ``WAIT`` per try (on one connection with a write of the lane's
        slot, :meth:`~multipair.store.durable.ReplicaWait.confirm`), tried
        for up to :data:`CONFIRM_BEFORE_SEND_S`; Redis away meanwhile is
        ridden out as usual. Without replicas to wait for, nothing is sent.
        """
        lane = self.lane
        replicas = lane.writer.replicas
        if replicas is None:
            return
        deadline = lane.clock.monotonic() + CONFIRM_BEFORE_SEND_S
        while True:
            acked = await lane.until_redis(partial(replicas.confirm, lane.writer.sync_key))
            if acked >= replicas.min_replicas:
                return
            if lane.stopped.is_set():
                raise Stopping
            if lane.clock.monotonic() >= deadline:
                log.warning(
                    "request not sent: its record is not confirmed on the replicas",
                    replicas=acked,
                    wanted=replicas.min_replicas,
                )
                raise CommandError(
                    bs.Reason.REDIS_UNAVAILABLE,
                    f"the transaction record was confirmed on {acked} of "
                    f"{replicas.min_replicas} Redis replicas; nothing was sent: send the same "
                    "command again",
                )

    async def _admit(
        self, command: bs.Command, record: TxRecord | None
    ) -> tuple[Decision, TxRecord | None]:
        """Read what :func:`admit` needs, ask it, and carry out its waits and record creation.

        Returns the decision to act on (run, resume, answer from the record,
        refuse) and the command's record as it stands then. ``record``: the
        record :meth:`TxStore.begin` found (None: not asked, or none).
        """
        lane = self.lane
        iid = lane.instance_id
        pos_ref_id: str = getattr(command, "pos_ref_id", None) or ""
        keeps_record = bool(command.records_tx and pos_ref_id)
        waited = record is not None  # found by begin, on a ready lane: no wait
        if keeps_record and record is None:
            record = await lane.until_redis(partial(lane.deps.txs.get, iid, pos_ref_id))
        while True:
            decision = admit(command, record, Readiness.of(lane.session), waited=waited)
            match decision:
                case WaitForTerminal():
                    await self.wait_for_terminal(command)
                    waited = True
                    if keeps_record:
                        record = await lane.until_redis(partial(lane.deps.txs.get, iid, pos_ref_id))
                case Run(create_record=True):
                    # Safe to repeat: a second try finds the record (created=False)
                    # and command_accepted is published by the caller either way, once.
                    fresh = new_record(command, pos_ref_id)
                    stored, created = await lane.until_redis(
                        partial(lane.deps.txs.create_if_absent, iid, fresh)
                    )
                    if created:
                        return Run(), stored
                    record, waited = stored, True  # there now: decide on it
                case _:
                    return decision, record

    def _answer_from_record(self, command: bs.Command, record: TxRecord) -> bs.Event:
        fields = lookup_fields_from_record(record)
        return self.lane.event(
            bs.TransactionLookup, command_id=command.command_id, found=True, **fields
        )

    async def until_stopped(self, future: asyncio.Future[Any]) -> Any:
        """Wait for ``future``; if the lane stops first, leave (the entry stays pending)."""
        await first(asyncio.shield(future), self.lane.stopped.wait())
        if not future.done():
            raise Stopping
        return future.result()

    async def claim_command_id(self, entry: Entry) -> bool:
        """First use of a command_id wins; a different command reusing it is refused.

        The claim remembers the stream entry, so the same entry replayed after a
        crash runs again, while a second entry with the same command_id does not
        (a money command repeated with the same pos_ref_id is answered from its
        record instead, in :meth:`_run_money`). True when this very entry had
        claimed it before: a redelivery (or a retry whose first reply was lost).
        """
        command = entry.command
        # One atomic step: claimed, or the live prior claim. Safe to repeat: a
        # retry after a lost reply finds this entry's own claim and goes on.
        prior_raw = await self.lane.until_redis(
            partial(
                self.lane.deps.txs.claim_command,
                self.lane.instance_id,
                command.command_id,
                claim_of(command, entry.entry_id),
            )
        )
        return _verdict(command, entry.entry_id, prior_raw) is Claim.REDELIVERY

    async def wait_for_terminal(self, command: bs.Command) -> None:
        """A new transaction goes out only over a live link: wait a bounded time for one.

        Never leave a purchase unsent for an unbounded time: after
        ``UNSENT_WAIT_S`` (or at ``expires_at`` if sooner) it is refused with
        ``terminal_unavailable``: nothing was sent, so the POS may retry.
        """
        limit = UNSENT_WAIT_S
        if command.expires_at is not None:
            limit = min(limit, (command.expires_at - self.lane.now()).total_seconds())
        clock = self.lane.clock
        deadline = clock.monotonic() + limit
        while not self.lane.session.ready:
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                raise CommandError(
                    bs.Reason.TERMINAL_UNAVAILABLE,
                    "the terminal is not connected; nothing was sent",
                )
            self.lane.flushed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.lane.flushed.wait()

    async def _recover_orphan(self, queued: TxRecord) -> None:
        structlog.contextvars.bind_contextvars(pos_ref_id=queued.pos_ref_id)
        # Read again: queued after a failover, it may have finished since (its
        # command ran meanwhile); only a record still unfinished is recovered.
        record = await self.lane.until_redis(
            partial(self.lane.deps.txs.get, self.lane.instance_id, queued.pos_ref_id)
        )
        if record is None or record.completed:
            structlog.contextvars.unbind_contextvars("pos_ref_id")
            return
        tx_type = TX_TYPES.get(record.tx_type)
        if tx_type is None or self.lane.session.status is spi.SpiStatus.UNPAIRED:
            log.error("cannot recover transaction", tx_type=record.tx_type)
            return
        self.lane.record = record
        self.lane.tx_done = asyncio.get_running_loop().create_future()
        try:
            session = self.lane.session
            await self.lane.step(lambda now: session.recover(record.pos_ref_id, tx_type, now))
            done = await self.until_stopped(self.lane.tx_done)
            self.lane.primary.finish(record, done, None)
        finally:
            self.lane.tx_done = None
            self.lane.record = None  # as after any transaction: never cached past its end
            structlog.contextvars.unbind_contextvars("pos_ref_id")
