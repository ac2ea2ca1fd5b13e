"""The aiohttp application: the door's checks (auth.py) as a middleware, errors as one sentence,
templates, static files, and the routes of each page module.

A page module owns one area and exports `routes` (an aiohttp RouteTableDef). Handlers reach the
library through `run(request, function, *args)`, which calls function(library, *args) on the
node's library thread, and answer with `page(request, template, **values)`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp_jinja2
import jinja2
from aiohttp import web

from p2psync import __version__
from p2psync.errors import NotFound, P2PSyncError
from p2psync.node import Node
from p2psync.store.library import Library
from p2psync.web.auth import CSRF_FIELD, CSRF_HEADER, SAFE_METHODS, Door, Session
from p2psync.web.events import EventHub

T = TypeVar("T")
HERE = Path(__file__).parent
# The page modules, in the order of the navigation bar; each exports `routes`.
PAGE_MODULES = (
    "library_pages",
    "group_pages",
    "reference_pages",
    "files_pages",
    "sync_pages",
    "conflicts_pages",
    "devices_pages",
    "pair_pages",
    "account_pages",
)
NAVIGATION = (
    ("/", "Library"),
    ("/sync", "Sync Status"),
    ("/conflicts", "Sync Conflicts"),
    ("/devices", "Devices"),
    ("/account", "Account"),
)
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")  # reachable without a session


@dataclass
class WebState:
    """What every handler shares: the node (its library worker and sync round), the door, the hub."""

    node: Node
    door: Door
    hub: EventHub

    @property
    def library_path(self) -> Path:
        return self.node.path


STATE = web.AppKey("p2psync_web", WebState)
SESSION = "p2psync_session"  # request key: the Session of the request


def state(request: web.Request) -> WebState:
    return request.app[STATE]


def session(request: web.Request) -> Session:
    found: Session = request[SESSION]
    return found


async def run(request: web.Request, function: Callable[..., T], *args: Any) -> T:
    """function(library, *args) on the library's thread: the same functions the CLI calls."""
    return await state(request).node.worker.call(function, *args)


def notice(request: web.Request, text: str) -> None:
    """Say `text` once, on the next page this session sees (after a redirect)."""
    session(request).notices.append(text)


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, {**_common(request), **values}, status=status)


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _common(request: web.Request) -> dict[str, Any]:
    """What every template sees."""
    found = request.get(SESSION)
    notices: list[str] = []
    if found is not None:
        notices, found.notices = found.notices, []
    return {
        "csrf": found.csrf if found is not None else "",
        "csrf_field": CSRF_FIELD,
        "navigation": NAVIGATION,
        "path": request.path,
        "notices": notices,
        "version": __version__,
        "library_name": request.get(CURRENT_NAME) or request.app.get(LIBRARY_NAME, ""),
    }


LIBRARY_NAME = web.AppKey("library_name", str)
CURRENT_NAME = "p2psync_library_name"  # request key: the library's name when the page was asked for
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refused(request: web.Request, status: int, text: str) -> web.Response:
    if "application/json" in request.headers.get("Accept", "") or request.path.startswith("/api/"):
        return web.json_response({"error": text}, status=status)
    return page(request, "error.html", status=status, message=text, status_code=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The door (auth.py): loopback Host, then a session (except /login and static files),
    then for changes the CSRF token and our own Origin."""
    door = state(request).door
    if not door.host_ok(request.host):
        return web.Response(status=421, text="This app answers only to 127.0.0.1 or localhost.\n")
    if request.path.startswith(OPEN_PATHS):
        return await handler(request)
    found = door.session(request.cookies.get(door.cookie_name))
    if found is None:
        return _refused(request, 401, "Not logged in: open the link `p2psync web` prints (it works once).")
    request[SESSION] = found
    if request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        site = request.headers.get("Sec-Fetch-Site")
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            token = (await request.post()).get(CSRF_FIELD)  # type: ignore[assignment]
        if origin == "null" and site == "same-origin":
            origin = None  # a form of ours under Referrer-Policy: no-referrer (Chromium sends "null")
        if (origin is not None and origin not in door.origins) or site == "cross-site" or token != found.csrf:
            return _refused(request, 403, "Refused: this request did not come from a page of this app.")
    return await handler(request)


# No script, style or frame from anywhere but this app; the login token never leaves in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'; form-action 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@web.middleware
async def current_name(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pages show the library's name as it is now: a rename on another device arrives by sync."""
    if request.method == "GET" and SESSION in request and not request.path.startswith(("/static/", "/events")):
        request[CURRENT_NAME] = await run(request, library_name)
    return await handler(request)


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k not in exc.headers})
        raise
    for key, value in SECURITY_HEADERS.items():
        if key == "Cache-Control" and request.path.startswith("/static/"):
            continue
        response.headers.setdefault(key, value)
    return response


@web.middleware
async def in_words(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A P2PSyncError from a page is one sentence to the user, and has changed nothing (every
    library function is one transaction)."""
    try:
        return await handler(request)
    except NotFound as exc:
        return _refused(request, 404, exc.message)
    except P2PSyncError as exc:
        return _refused(request, 400, exc.message)


async def login(request: web.Request) -> web.StreamResponse:
    door = state(request).door
    if not door.spend(request.query.get("token", "")):
        return _refused(
            request, 401, "This login link was already used or has expired: run `p2psync web` for a new one."
        )
    sid = door.open_session()
    response = web.HTTPSeeOther("/")
    response.set_cookie(door.cookie_name, sid, httponly=True, samesite="Strict", path="/", max_age=7 * 24 * 3600)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    door = state(request).door
    door.close_session(request.cookies.get(door.cookie_name))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(door.cookie_name, path="/")
    return response


async def events(request: web.Request) -> web.StreamResponse:
    return await state(request).hub.stream(request)


def make_web_app(node: Node, door: Door, hub: EventHub, library_name: str) -> web.Application:
    app = web.Application(
        middlewares=[headers, guard, current_name, in_words], client_max_size=1024**3
    )  # uploads: PDFs, imports
    app[STATE] = WebState(node, door, hub)
    app[LIBRARY_NAME] = library_name
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["static_version"] = int(time.time())
    app.router.add_get("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/events", events)
    app.router.add_static("/static/", HERE / "static")
    for name in PAGE_MODULES:
        module = importlib.import_module(f"p2psync.web.{name}")
        app.router.add_routes(module.routes)
        if hasattr(module, "on_shutdown"):  # work a page module started (a sync round) ends with the app
            app.on_shutdown.append(module.on_shutdown)
    return app


def library_name(library: Library) -> str:
    return library.name
