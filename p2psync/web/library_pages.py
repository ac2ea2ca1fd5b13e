"""The library: the reference list (sorting, paging, search), the sidebar of views and groups,
groups and their members, the trash.

Every list is one `listing.page` of the store: a page at a time, through an index for each sort
order, never the whole library. Changes are forms that post and come back to the list with a
notice (they work without JavaScript); static/library.js adds search as you type, more rows as
the list scrolls, and keeps the list current when a sync brings changes. The rules are the
library's (groups, trash), the same functions the command line calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from p2psync.errors import InvalidValue
from p2psync.model.groups import SYNC_CONFLICTS_ID
from p2psync.model.people import display_person
from p2psync.store.library import Library, ReferenceRow, duplicates
from p2psync.store.library import listing as lists
from p2psync.store.library.listing import Listing, ReferencePage, View
from p2psync.store.library.records import GroupRow, GroupSetRow
from p2psync.web.app import notice, page, redirect, run
from p2psync.web.app import state as web_state

routes = web.RouteTableDef()
PAGE_SIZE = 50
MAX_SELECTED = 5_000  # references one form may name
MAX_GROUP_NAME = 200
# The order a column sorts in when first clicked: newest first for "added", A to Z otherwise.
FIRST_DESCENDING = {"added"}
COLUMNS = (("author", "Author"), ("year", "Year"), ("title", "Title"), ("journal", "Journal"), ("added", "Added"))


@dataclass(frozen=True)
class ListState:
    """A list as its address says: the view, the search, the order, where the page starts."""

    listing: Listing
    after: str | None = None
    before: str | None = None
    page_number: int = 1
    size: int = PAGE_SIZE

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ListState:
        view_name = query.get("view", "all")
        try:
            view = View(view_name)
        except ValueError:
            raise InvalidValue("There is no such view: choose one in the sidebar.") from None
        group = query.get("group") or None
        if group is not None:
            view = View.GROUP
        elif view is View.GROUP:
            raise InvalidValue("Say which group to list.")
        text = query.get("q", "").strip()
        sort = query.get("sort") or "added"
        order = query.get("order") or ("desc" if sort in FIRST_DESCENDING else "asc")
        if order not in ("asc", "desc"):
            raise InvalidValue("The order is asc or desc.")
        listing = Listing(view, group, text, sort, order == "desc")
        listing.check()
        return cls(
            listing,
            after=query.get("after") or None,
            before=query.get("before") or None,
            page_number=_whole(query.get("page", "1"), "The page number"),
            size=_whole(query.get("size", str(PAGE_SIZE)), "The page size"),
        )

    def url(self, base: str = "/", **changes: Any) -> str:
        """The address of this list with some parts changed (defaults left out)."""
        state = replace(self, **{k: v for k, v in changes.items() if k in ("after", "before", "page_number", "size")})
        listing = replace(state.listing, **{k: v for k, v in changes.items() if k in ("sort", "descending")})
        params: dict[str, str] = {}
        if listing.view is View.GROUP:
            params["group"] = str(listing.group)
        elif listing.view is not View.ALL:
            params["view"] = listing.view.value
        if listing.query:
            params["q"] = listing.query
        if listing.sort != "added" or listing.descending != (listing.sort in FIRST_DESCENDING):
            params["sort"] = listing.sort
            params["order"] = "desc" if listing.descending else "asc"
        if state.after:
            params["after"] = state.after
        if state.before:
            params["before"] = state.before
        if state.page_number != 1:
            params["page"] = str(state.page_number)
        if state.size != PAGE_SIZE:
            params["size"] = str(state.size)
        return base + ("?" + urlencode(params) if params else "")

    def sort_url(self, column: str) -> str:
        """Sorted by `column`: flipped when it is the current order, else its first order."""
        if self.listing.sort == column:
            return self.url(sort=column, descending=not self.listing.descending)
        return self.url(sort=column, descending=column in FIRST_DESCENDING)

    def aria_sort(self, column: str) -> str:
        if self.listing.sort != column:
            return "none"
        return "descending" if self.listing.descending else "ascending"

    @property
    def first(self) -> ListState:
        return replace(self, after=None, before=None, page_number=1, size=PAGE_SIZE)


def _whole(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 7:
        raise InvalidValue(f"{what} must be a whole number from 1.")
    return int(text)


@dataclass(frozen=True)
class Sidebar:
    total: int
    conflicts: int
    duplicates: int | None  # None: still being worked out
    trash: int
    groups: tuple[GroupRow, ...]
    sets: tuple[GroupSetRow, ...] = ()  # with their groups (web/group_pages.py changes them)

    @property
    def unfiled(self) -> tuple[GroupRow, ...]:
        """The groups in no set, shown after the sets."""
        return tuple(g for g in self.groups if g.set is None)

    @property
    def plain(self) -> tuple[GroupRow, ...]:
        """The groups references can be added to by hand (not smart groups)."""
        return tuple(g for g in self.groups if not g.smart)


@dataclass(frozen=True)
class LibraryView:
    """What the list page shows."""

    page: ReferencePage
    sidebar: Sidebar
    title: str  # of the view: "All references", a group's name, ...
    group_name: str | None  # the group listed, for rename and delete
    group: GroupRow | None = None  # the group listed (its search, its set)


def _sidebar(library: Library, known: dict[View, int]) -> Sidebar:
    """The views' and groups' counts (`known`: those the page has counted already)."""

    def count(view: View) -> int:
        return known[view] if view in known else lists.count(library, view)

    # The duplicates are counted once their keys are up to date; after a large sync or import
    # that takes seconds, which _catch_up_duplicates spends in the background, not in this page.
    waiting = duplicates.pending(library.db)
    if 0 < waiting <= duplicates.BATCH:
        duplicates.catch_up(library.db)
    groups = library.groups.rows(system=False)
    return Sidebar(
        total=count(View.ALL),
        conflicts=count(View.CONFLICTS),
        duplicates=None if waiting > duplicates.BATCH else count(View.DUPLICATES),
        trash=count(View.TRASH),
        groups=tuple(groups),
        sets=tuple(library.sets.rows(groups)),
    )


_CATCHING_UP: set[int] = set()  # the apps (by id) finding duplicate keys in the background
_TASKS: set[asyncio.Task[None]] = set()  # (held, so that a running task is not collected)


async def _catch_up_duplicates(request: web.Request) -> None:
    """Work through a large duplicates backlog a batch per call on the library's thread (pages
    are served between batches), then tell the open pages (their sidebars count again)."""
    app = id(request.app)
    if app in _CATCHING_UP:
        return
    _CATCHING_UP.add(app)
    try:
        while await run(request, lambda library: duplicates.catch_up(library.db, duplicates.BATCH)):
            pass
        web_state(request).hub.publish("library")
    finally:
        _CATCHING_UP.discard(app)


def _title(library: Library, listing: Listing) -> tuple[str, str | None]:
    if listing.view is View.GROUP:
        name = library.groups.by_id(str(listing.group)).name
        return name, name
    titles = {
        View.ALL: "All references",
        View.CONFLICTS: "Sync Conflicts",
        View.DUPLICATES: "Duplicates to review",
        View.TRASH: "Trash",
    }
    return titles[listing.view], None


def library_view(library: Library, state: ListState, sidebar: bool = True) -> LibraryView:
    title, group_name = _title(library, state.listing)
    found = lists.page(library, state.listing, state.after, state.before, state.page_number, state.size)
    listing = state.listing
    known: dict[View, int] = {}
    if not listing.query and listing.view is not View.GROUP:
        known[listing.view] = found.total
    bar = _sidebar(library, known) if sidebar else Sidebar(0, 0, 0, 0, ())
    group = None
    if listing.view is View.GROUP:
        rows = bar.groups if sidebar else tuple(library.groups.rows(system=False))
        group = next((g for g in rows if g.id == listing.group), None)
    return LibraryView(found, bar, title, group_name, group)


# --- how a row reads -----------------------------------------------------------------------------


def first_author(ref: ReferenceRow) -> str:
    people = ref.people
    if not people:
        return ""
    first = people[0]
    name = str(first.get("family") or first.get("literal") or display_person(first))
    return name + (" et al." if len(people) > 1 else "")


def added_day(ref: ReferenceRow) -> str:
    return (ref.added or "")[:10]


def _values(request: web.Request, state: ListState, shown: LibraryView) -> dict[str, Any]:
    return {
        "state": state,
        "shown": shown,
        "columns": COLUMNS,
        "views": View,
        "first_author": first_author,
        "added_day": added_day,
        "back": state.url(),
        "next_url": _next_url(state, shown.page),
        "more_url": _next_url(state, shown.page, "/library/rows"),
        "previous_url": _previous_url(state, shown.page),
        "first_url": state.first.url() if (state.after or state.before or state.page_number > 1) else None,
    }


def _timed(response: web.StreamResponse, started: float) -> web.StreamResponse:
    """Server-Timing: the handler's own time, which bench/bench_web.py reads."""
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


# --- pages -------------------------------------------------------------------------------------


@routes.get("/")
async def references(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    state = ListState.parse(request.query)
    shown = await run(request, library_view, state)
    if shown.sidebar.duplicates is None:
        task = asyncio.get_running_loop().create_task(_catch_up_duplicates(request))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
    return _timed(page(request, "library.html", **_values(request, state, shown)), started)


@routes.get("/library/results")
async def results(request: web.Request) -> web.StreamResponse:
    """The list alone (no sidebar): what search as you type and a live refresh swap in."""
    started = time.perf_counter()
    state = ListState.parse(request.query)
    shown = await run(request, library_view, state, False)
    return _timed(page(request, "library_results.html", **_values(request, state, shown)), started)


@routes.get("/library/rows")
async def more_rows(request: web.Request) -> web.StreamResponse:
    """The rows of the next page, for a list that grows as it scrolls: {"rows", "next"}."""
    started = time.perf_counter()
    state = ListState.parse(request.query)
    shown = await run(request, library_view, state, False)
    html = page(request, "library_rows.html", **_values(request, state, shown)).text
    return _timed(web.json_response({"rows": html, "next": _next_url(state, shown.page, "/library/rows")}), started)


def _next_url(state: ListState, found: ReferencePage, base: str = "/") -> str | None:
    if found.next_after is None:
        return None
    return state.url(base, after=found.next_after, before=None, page_number=1)


def _previous_url(state: ListState, found: ReferencePage) -> str | None:
    if found.previous_before is None:
        return None
    return state.url(before=found.previous_before, after=None, page_number=1)


# --- changes: forms that post, then back to the list with a notice ----------------------------------


async def _form(request: web.Request) -> Mapping[str, Any]:
    return await request.post()


def _back(form: Mapping[str, Any], default: str = "/") -> str:
    """Where the form came from: one of our own list addresses, never another site."""
    back = str(form.get("back") or default)
    if not back.startswith("/") or back.startswith("//") or "\\" in back or len(back) > 4000:
        return default
    return back


def _selected(request_form: Any) -> list[str]:
    refs = [str(r) for r in request_form.getall("ref", [])]
    if not refs:
        raise InvalidValue("Select one or more references first (the boxes at the start of each row).")
    if len(refs) > MAX_SELECTED:
        raise InvalidValue(f"Select at most {MAX_SELECTED:,} references at a time.")
    return refs


def _user_group(form: Mapping[str, Any]) -> str:
    group = str(form.get("group") or "")
    if not group:
        raise InvalidValue("Choose a group first.")
    if group == SYNC_CONFLICTS_ID:
        raise InvalidValue(
            "Sync Conflicts holds the conflicted references until they are resolved; choose another group."
        )
    return group


def _count(n: int) -> str:
    return f"{n:,} reference" + ("" if n == 1 else "s")


@routes.post("/library/selection")
async def selection(request: web.Request) -> web.StreamResponse:
    """Add the selected references to a group, take them out of it, trash or restore them."""
    form = await request.post()
    action = str(form.get("action") or "")
    refs = _selected(form)
    if action == "add":
        group = _user_group(form)

        def add(library: Library) -> tuple[int, str]:
            name = library.groups.by_id(group).name
            return library.groups.add_refs(group, refs), name

        added, name = await run(request, add)
        notice(request, f"Added {_count(added)} to {name!r}." if added else f"Already in {name!r}: nothing to add.")
    elif action == "remove":
        group = _user_group(form)

        def remove(library: Library) -> tuple[int, str]:
            name = library.groups.by_id(group).name
            return library.groups.remove_refs(group, refs), name

        removed, name = await run(request, remove)
        notice(request, f"Removed {_count(removed)} from {name!r}; they are still in the library.")
    elif action == "trash":
        moved = await run(request, lambda library: library.trash.put_many(refs))
        notice(request, f"Moved {_count(len(moved))} to the trash.")
    elif action == "restore":
        restored = await run(request, lambda library: library.trash.restore_many(refs))
        notice(request, f"Restored {_count(len(restored))} from the trash.")
    else:
        raise InvalidValue("Choose what to do with the selected references.")
    raise redirect(_back(form))


def _group_name(form: Mapping[str, Any]) -> str:
    name = str(form.get("name") or "")
    if len(name) > MAX_GROUP_NAME:
        raise InvalidValue(f"A group name is at most {MAX_GROUP_NAME} characters.")
    return name


@routes.post("/groups")
async def create_group(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = _group_name(form)

    def create(library: Library) -> tuple[str, str]:
        group_id = library.groups.create(name)
        return group_id, library.groups.by_id(group_id).name

    group_id, created = await run(request, create)
    notice(request, f"Created group {created!r}.")
    raise redirect("/?" + urlencode({"group": group_id}))


@routes.post("/groups/{group}/rename")
async def rename_group(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    group = request.match_info["group"]
    name = _group_name(form)

    def rename(library: Library) -> str:
        library.groups.by_id(group)
        library.groups.rename(group, name)
        return library.groups.by_id(group).name

    renamed = await run(request, rename)
    notice(request, f"Renamed the group to {renamed!r}.")
    raise redirect("/?" + urlencode({"group": group}))


@routes.get("/groups/{group}/delete")
async def confirm_delete_group(request: web.Request) -> web.StreamResponse:
    group = request.match_info["group"]
    found = await run(request, lambda library: library.groups.by_id(group))
    return page(
        request,
        "library_confirm.html",
        heading=f"Delete the group {found.name!r}?",
        explanation="The group goes, on every device this library syncs with; its references stay in the library.",
        action=f"/groups/{found.id}/delete",
        button="Delete the group",
        cancel="/?" + urlencode({"group": found.id}),
    )


@routes.post("/groups/{group}/delete")
async def delete_group(request: web.Request) -> web.StreamResponse:
    group = request.match_info["group"]

    def delete(library: Library) -> str:
        name = library.groups.by_id(group).name
        library.groups.delete(group)
        return name

    name = await run(request, delete)
    notice(request, f"Deleted the group {name!r}; its references are still in the library.")
    raise redirect("/")


@routes.get("/trash/empty")
async def confirm_empty_trash(request: web.Request) -> web.StreamResponse:
    count = await run(request, lambda library: library.refs.count(trashed=True))
    if not count:
        notice(request, "The trash is empty.")
        raise redirect("/?view=trash")
    return page(
        request,
        "library_confirm.html",
        heading=f"Empty the trash ({_count(count)})?",
        explanation=(
            f"Permanently delete {_count(count)} in the trash, with their attachments, here and on every "
            "machine this library syncs with. This cannot be undone."
        ),
        action="/trash/empty",
        button="Empty the trash",
        cancel="/?view=trash",
    )


@routes.post("/trash/empty")
async def empty_trash(request: web.Request) -> web.StreamResponse:
    count = await run(request, lambda library: library.trash.empty())
    notice(request, f"Deleted {_count(count)} for good." if count else "The trash is empty.")
    raise redirect("/?view=trash")
