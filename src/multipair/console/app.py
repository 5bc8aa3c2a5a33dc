"""The console's web server (aiohttp): pages, a JSON API, a live feed and the ops actions.

Routes (every one needs the token, but ``/static/*`` and ``POST /login``):

==========================================  ==========================================
``GET /``, ``/lanes/{id}``, ``/hosts``      the pages (plain HTML, CSS and one script)
``GET /api/session``                        the CSRF value the page sends with actions
``GET /api/lanes``, ``/api/hosts``          every lane's row; every supervisor
``GET /api/lanes/{id}``                     a lane: row, profile, recent events, recent transactions
``GET /api/stream``                         server-sent events (:mod:`multipair.console.feed`)
``POST /api/lanes/{id}/{action}``           ``restart``, ``stop``, ``start`` (control stream);
                                            ``pair``, ``pair_confirm``, ``pair_cancel``,
                                            ``unpair`` (commands)
``POST /api/hosts/{host}/{action}``         ``drain``, ``accept``
==========================================  ==========================================

Access rules:

- **The token.** A request carries it as ``Authorization: Bearer TOKEN``, or
  in the console's cookie (``HttpOnly``, ``SameSite=Strict``), which
  ``GET /?token=TOKEN`` (the link ``multipair up`` prints) or the login form
  sets. Without it: 401 (the login form for a page, JSON for the API).
- **Actions need a header.** A ``POST`` is taken only with the token in
  ``Authorization``, or with the cookie *and* ``X-Multipair-Csrf`` (an HMAC
  of the token, which only a page served with the cookie can read from
  ``/api/session``): another site's form or script cannot make the browser
  act. A ``POST`` whose ``Origin`` is another site is refused too (403).
- Every answer says ``no-store``, and pages allow scripts and styles from
  the console itself only (``Content-Security-Policy``), in no frame.
- Actions go through the client library, as the CLI's do: the profile's
  ``enabled`` and the owning host's control stream for ``restart``/``stop``/
  ``start``, commands on the lane's stream for pairing. With a Redis ACL the
  console runs as ``multipair-ops`` (its URL names that user), which may do
  all of it; each control message says ``requested_by`` ``console:user@host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import errno
import hashlib
import hmac
import html
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from multipair import broker_schema as bs
from multipair.cli._base import Fail
from multipair.cli._lane import LaneStopped, control_lane
from multipair.cli._views import check_ready, last_exits
from multipair.client import (
    AsyncClient,
    ClientError,
    CommandRejected,
    LaneNotFound,
    OutcomeTimeout,
    new_command_id,
)
from multipair.console.cli import DEFAULT_BIND, DEFAULT_PORT
from multipair.console.feed import Feed
from multipair.console.pages import page, static
from multipair.console.views import event_json, lane_json, tx_json
from multipair.exceptions import CommandError, ConfigurationError, MultipairError, RetryLater
from multipair.logs import get_logger
from multipair.redis_conn import as_text, redis_errors
from multipair.store.transactions import TxStore
from multipair.supervisor.control import (
    ControlAction,
    ControlMessage,
    default_requester,
    send_control,
)
from multipair.supervisor.hosts import read_hosts

__all__ = [
    "CSRF_HEADER",
    "Console",
    "ConsoleConfig",
    "csrf_value",
]

log = get_logger("multipair.console")

CSRF_HEADER: Final = "X-Multipair-Csrf"
_RECENT_EVENTS: Final = 100
_RECENT_TXS: Final = 20
_KEEPALIVE_S: Final = 15.0
_READY_WAIT_S: Final = 10.0
"""How long a request waits for the console's first read of Redis before a 503."""
_UNPAIR_TIMEOUT_S: Final = 20.0
_PAGES: Final = {"/": "lanes", "/hosts": "hosts"}
_STATIC: Final = frozenset({"console.css", "console.js"})
_TYPES: Final = {".css": "text/css", ".js": "text/javascript", ".html": "text/html"}
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_LANE_ACTIONS: Final = frozenset(
    {"restart", "stop", "start", "pair", "pair_confirm", "pair_cancel", "unpair"}
)
_HOST_ACTIONS: Final = {"drain": ControlAction.DRAIN, "accept": ControlAction.ACCEPT}


def csrf_value(token: str) -> str:
    """What a page must send in :data:`CSRF_HEADER` with an action: an HMAC of the token."""
    return hmac.new(token.encode(), b"multipair-console-csrf", hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleConfig:
    """Where the console listens, its token, and how often it reads every lane again."""

    token: str
    bind: str = DEFAULT_BIND
    port: int = DEFAULT_PORT
    refresh_s: float = 3.0
    pair_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if len(self.token) < 16 or not self.token.isprintable():
            raise ConfigurationError(
                "the console token (MULTIPAIR_CONSOLE_TOKEN) must be 16 or more printable "
                "characters"
            )


class _Refused(Exception):
    """An action that cannot be done now, with the operator's next step (409)."""


@dataclass(slots=True)
class _Pairing:
    """A pairing this console started: the client's ``pair`` waits on ``decision``."""

    decision: asyncio.Future[bool]
    task: asyncio.Task[None] | None = None
    code: str | None = None
    """The code the lane showed, once it did."""

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class Console:
    """The web console over one :class:`~multipair.client.AsyncClient` (not closed here)."""

    def __init__(self, client: AsyncClient, config: ConsoleConfig) -> None:
        self.client = client
        self.config = config
        self.feed = Feed(client, refresh_s=config.refresh_s)
        self.requested_by = f"console:{default_requester()}"[:256]
        self.port: int | None = None
        self._csrf = csrf_value(config.token)
        self._pairings: dict[str, _Pairing] = {}
        self._runner: web.AppRunner | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._files = {name: static(name) for name in _STATIC}
        for path, name in _PAGES.items():
            self._files[f"{name}.html"] = page(name, current=path)
        self._files["lane.html"] = page("lane", current=None)  # no header link is a lane's
        self._login = static("login.html").decode()

    # ------------------------------------------------------------------ life cycle

    @property
    def cookie(self) -> str:
        """The cookie's name: one per port, as cookies ignore ports and tokens differ."""
        return f"multipair_console_{self.port or self.config.port}"

    @property
    def url(self) -> str:
        host = self.config.bind
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a name, not a bind
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def login_url(self) -> str:
        """The URL with the token: opening it logs the browser in (the cookie is set)."""
        return f"{self.url}?token={self.config.token}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers, self._auth])
        app.router.add_get("/", self._page)
        app.router.add_get("/hosts", self._page)
        app.router.add_get("/lanes/{id}", self._lane_page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_post("/login", self._login_post)
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/lanes", self._lanes)
        app.router.add_get("/api/lanes/{id}", self._lane)
        app.router.add_get("/api/hosts", self._hosts)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_post("/api/lanes/{id}/{action}", self._lane_action)
        app.router.add_post("/api/hosts/{host}/{action}", self._host_action)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def start(self, *, any_port_if_taken: bool = False) -> str:
        """Start following Redis and listen; the URL. ``ConfigurationError`` when the port is
        taken (``any_port_if_taken``: take a free one instead)."""
        self._feed_task = asyncio.create_task(self.feed.run(), name="console-feed")
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, self.config.bind, self.config.port).start()
            except OSError as exc:
                if not any_port_if_taken or exc.errno != errno.EADDRINUSE:
                    where = f"{self.config.bind}:{self.config.port}"
                    raise ConfigurationError(
                        f"cannot serve the console on {where}: {exc.strerror or exc}; "
                        "choose another --port (or --bind)"
                    ) from None
                await web.TCPSite(runner, self.config.bind, 0).start()
        except BaseException:
            await runner.cleanup()
            await self._stop_feed()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("console serving", url=self.url)
        return self.url

    async def close(self) -> None:
        for pairing in self._pairings.values():
            if pairing.task is not None:
                pairing.task.cancel()
        self._pairings.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._stop_feed()

    async def _stop_feed(self) -> None:
        self.feed.close()
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
            self._feed_task = None

    async def _on_shutdown(self, _app: web.Application) -> None:
        self.feed.close()  # every live page's stream ends

    # ------------------------------------------------------------------ access

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/static/") or (path == "/login" and request.method == "POST"):
            return await handler(request)
        token = self.config.token
        given = request.query.get("token")
        if given is not None and request.method == "GET" and not path.startswith("/api/"):
            if not _same(given, token):
                return self._unauthorized(request, "that token is not this console's")
            # The printed link: keep the token in the cookie, and out of the address bar.
            found = web.HTTPSeeOther(location=path)
            self._set_cookie(found)
            raise found
        bearer = request.headers.get("Authorization", "")
        by_header = bearer.startswith("Bearer ") and _same(bearer[7:].strip(), token)
        if not by_header and not _same(request.cookies.get(self.cookie), token):
            return self._unauthorized(request, None)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return _json({"error": "forbidden", "detail": "another site's request"}, 403)
            if not by_header and not _same(request.headers.get(CSRF_HEADER), self._csrf):
                return _json(
                    {"error": "forbidden", "detail": f"an action needs the {CSRF_HEADER} header"},
                    403,
                )
        return await handler(request)

    def _set_cookie(self, response: web.StreamResponse) -> None:
        response.set_cookie(
            self.cookie, self.config.token, httponly=True, samesite="Strict", path="/"
        )

    def _unauthorized(self, request: web.Request, problem: str | None) -> web.Response:
        if request.path.startswith("/api/"):
            return _json({"error": "unauthorized", "detail": "the console token is needed"}, 401)
        page = self._login.replace("{{next}}", html.escape(request.path, quote=True)).replace(
            "{{problem}}", html.escape(problem or "")
        )
        return web.Response(status=401, text=page, content_type="text/html")

    async def _login_post(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = form.get("token")
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        if not isinstance(given, str) or not _same(given.strip(), self.config.token):
            return self._unauthorized(request, "that token is not this console's")
        found = web.HTTPSeeOther(location=target)
        self._set_cookie(found)
        raise found

    # ------------------------------------------------------------------ pages

    async def _page(self, request: web.Request) -> web.Response:
        return self._file(f"{_PAGES[request.path]}.html")

    async def _lane_page(self, request: web.Request) -> web.Response:
        _lane_id(request)
        return self._file("lane.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        kind = _TYPES[name[name.rindex(".") :]]
        return web.Response(body=self._files[name], content_type=kind, charset="utf-8")

    # ------------------------------------------------------------------ reads

    async def _session(self, request: web.Request) -> web.Response:
        return _json({"csrf": self._csrf, "csrf_header": CSRF_HEADER})

    async def _ready(self) -> None:
        try:
            async with asyncio.timeout(_READY_WAIT_S):
                await self.feed.wait_ready()
        except TimeoutError:
            raise web.HTTPServiceUnavailable(
                text="the console has not read Redis yet (is it reachable?)"
            ) from None

    async def _lanes(self, request: web.Request) -> web.Response:
        await self._ready()
        return _json({"lanes": list(self.feed.rows.values())})

    async def _hosts(self, request: web.Request) -> web.Response:
        await self._ready()
        return _json({"hosts": self.feed.hosts})

    async def _lane(self, request: web.Request) -> web.Response:
        iid = _lane_id(request)
        return await _answer(self._lane_details(iid))

    async def _lane_details(self, iid: str) -> dict[str, Any]:
        client = self.client
        info = await client.lane_info(iid)
        exit_ = (await last_exits(client, [iid]))[iid]
        redis, keys = client.redis, client.keys
        with redis_errors():
            raw_events: Any = await redis.xrevrange(keys.events(iid), count=_RECENT_EVENTS)
            refs = await redis.zrevrange(keys.txs(iid), 0, _RECENT_TXS - 1)
        events = []
        for raw_id, fields in reversed(raw_events or []):
            with contextlib.suppress(CommandError):
                events.append(event_json(iid, as_text(raw_id), bs.decode_event(fields)))
        store = TxStore(redis, keys)
        records = await asyncio.gather(*(store.get(iid, as_text(ref)) for ref in refs))
        pairing = self._pairings.get(iid)
        return {
            **lane_json(info, _dt.datetime.now(_dt.UTC), exit_),
            "events": events,
            "transactions": [tx_json(r) for r in records if r is not None],
            "pairing_here": pairing is not None and pairing.running,
        }

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        for name, value in _SECURITY_HEADERS.items():
            response.headers[name] = value
        await self._ready()
        await response.prepare(request)
        subscriber = self.feed.subscribe()
        try:
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE_S):
                        kind, data = await subscriber.queue.get()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if kind == "close":
                    break
                await response.write(
                    b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
                )
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        finally:
            self.feed.unsubscribe(subscriber)
        return response

    # ------------------------------------------------------------------ actions

    async def _lane_action(self, request: web.Request) -> web.Response:
        iid = _lane_id(request)
        action = request.match_info["action"]
        if action not in _LANE_ACTIONS:
            raise web.HTTPNotFound()
        body = await _body(request)
        log.info("console action", action=action, instance_id=iid, requested_by=self.requested_by)
        match action:
            case "restart" | "stop" | "start":
                work: Awaitable[dict[str, Any]] = self._control(iid, action)
            case "pair":
                work = self._pair(iid)
            case "pair_confirm":
                work = self._pair_decide(iid, True, body.get("confirmation_code"))
            case "pair_cancel":
                work = self._pair_decide(iid, False, None)
            case _:
                work = self._unpair(iid)
        answer = await _answer(work)
        with contextlib.suppress(MultipairError, RedisError, OSError):
            await self.feed.refresh_lane(iid)
        return answer

    async def _control(self, iid: str, action: str) -> dict[str, Any]:
        """As ``multipair lane restart|stop|start``: the profile, then the owner's stream."""
        try:
            owner = await control_lane(self.client, iid, action, requested_by=self.requested_by)
        except LaneStopped:
            raise _Refused(f"lane {iid} is stopped: start it first") from None
        return {"instance_id": iid, "action": action, "owner": owner, "control_sent": bool(owner)}

    async def _pair(self, iid: str) -> dict[str, Any]:
        """Start a pairing through the client's ``pair``; its code comes back as an event, and
        the operator's confirm (or cancel) through :meth:`_pair_decide`."""
        info = await self.client.lane_info(iid)
        check_ready(info, need_paired=False)
        if info.status not in (None, bs.Status.UNPAIRED):
            raise _Refused(f"lane {iid} is already paired: unpair it first")
        earlier = self._pairings.get(iid)
        if earlier is not None and earlier.running:
            raise _Refused(f"a pairing of lane {iid} started here is still running")
        pairing = _Pairing(asyncio.get_running_loop().create_future())

        async def operator(code: str) -> bool:
            pairing.code = code
            return await pairing.decision

        async def run() -> None:
            try:
                event = await self.client.pair(
                    iid, confirm=operator, timeout=self.config.pair_timeout_s
                )
                log.info("console pairing done", instance_id=iid, state=event.state)
            except (MultipairError, RedisError, OSError) as exc:
                log.warning("console pairing ended", instance_id=iid, error=str(exc))

        pairing.task = asyncio.create_task(run(), name=f"console-pair-{iid}")
        self._pairings[iid] = pairing
        return {"instance_id": iid, "pairing": "started"}

    async def _pair_decide(self, iid: str, confirm: bool, code: object) -> dict[str, Any]:
        """The operator's answer: to this console's pairing, else as a command of its own."""
        if code is not None and not isinstance(code, str):
            raise ClientError(bs.Reason.WRONG_TYPE, "confirmation_code must be a string")
        pairing = self._pairings.get(iid)
        if pairing is not None and pairing.running and not pairing.decision.done():
            if confirm and code is not None and pairing.code not in (None, code):
                raise _Refused("that is not the code the lane showed")
            pairing.decision.set_result(confirm)
            return {"instance_id": iid, "confirmed": confirm}
        command: bs.Command = (
            bs.PairConfirm(command_id=new_command_id(), confirmation_code=code)
            if confirm
            else bs.PairCancel(command_id=new_command_id())
        )
        await self.client.get_lane(iid)
        await self.client.send(iid, command)
        return {"instance_id": iid, "confirmed": confirm, "command_id": command.command_id}

    async def _unpair(self, iid: str) -> dict[str, Any]:
        check_ready(await self.client.lane_info(iid))
        event = await self.client.send_and_wait(
            iid, bs.Unpair(command_id=new_command_id()), timeout=_UNPAIR_TIMEOUT_S
        )
        return {"instance_id": iid, "unpaired": True, "event": event.type}

    async def _host_action(self, request: web.Request) -> web.Response:
        host = request.match_info["host"]
        action = _HOST_ACTIONS.get(request.match_info["action"])
        if action is None:
            raise web.HTTPNotFound()
        try:
            host = bs.validate_host_id(host)
        except MultipairError:
            raise web.HTTPNotFound() from None
        log.info("console action", action=str(action), host=host, requested_by=self.requested_by)
        return await _answer(self._host_control(host, action))

    async def _host_control(self, host: str, action: ControlAction) -> dict[str, Any]:
        client = self.client
        with redis_errors():
            known = {e.host_id for e in await read_hosts(client.redis, client.keys)}
            if host not in known:
                raise _Refused(f"no host {host!r} in {client.keys.hosts()}")
            request_id = f"console-{uuid.uuid4().hex[:12]}"
            message = ControlMessage(
                action=action, request_id=request_id, requested_by=self.requested_by
            )
            await send_control(client.redis, client.keys, host, message)
        with contextlib.suppress(MultipairError, RedisError, OSError):
            await self.feed.refresh()
        return {"host_id": host, "action": str(action), "request_id": request_id}


def _lane_id(request: web.Request) -> str:
    try:
        return bs.validate_instance_id(request.match_info["id"])
    except CommandError:
        raise web.HTTPNotFound() from None


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body is not a JSON object")
    return body


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")


async def _answer(work: Awaitable[dict[str, Any]]) -> web.Response:
    """The work's document, or its failure as the status and one sentence."""
    try:
        return _json(await work)
    except LaneNotFound as exc:
        return _json({"error": "not_found", "detail": exc.detail}, 404)
    except CommandRejected as exc:
        return _json({"error": str(exc.reason), "detail": exc.detail}, 409)
    except OutcomeTimeout as exc:
        return _json({"error": "timeout", "detail": exc.detail}, 504)
    except (_Refused, Fail) as exc:
        return _json({"error": "refused", "detail": str(exc)}, 409)
    except ClientError as exc:
        return _json({"error": str(exc.reason), "detail": exc.detail}, 400)
    except (RetryLater, RedisError, OSError) as exc:
        return _json({"error": "redis_unavailable", "detail": str(exc)}, 503)
