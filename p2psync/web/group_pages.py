"""Smart groups, group sets and the library's name in the web app: the forms of the library
page's sidebar and of a group's list, and a group set's own page. The rules are the library's
(store/library/groups.py, group_sets.py, Library.rename), the same functions the command line
calls; each change is one transaction and comes back to a list with a notice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from p2psync.errors import InvalidValue
from p2psync.model.groups import MAX_GROUP_NAME, MAX_LIBRARY_NAME, MAX_SMART_QUERY
from p2psync.store.library import Library
from p2psync.store.library.records import GroupName, GroupSetRow
from p2psync.web.app import notice, page, redirect, run

routes = web.RouteTableDef()


def _text(form: Mapping[str, Any], key: str, what: str, limit: int) -> str:
    """A form field, bounded before it reaches the library (which gives the precise rule)."""
    value = str(form.get(key) or "")
    if len(value) > 4 * limit:
        raise InvalidValue(f"{what} is at most {limit} characters.")
    return value


def _group_url(group_id: str) -> str:
    return "/?" + urlencode({"group": group_id})


# --- smart groups and a group's set -------------------------------------------------------------


@routes.post("/groups/smart")
async def create_smart_group(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = _text(form, "name", "A group name", MAX_GROUP_NAME)
    query = _text(form, "query", "A smart group's search", MAX_SMART_QUERY)
    group_set = str(form.get("set") or "") or None

    def create(library: Library) -> tuple[str, str, int]:
        group_id = library.groups.create_smart(name, query, group_set)
        return group_id, library.groups.by_id(group_id).name, library.refs.count(group=group_id)

    group_id, created, count = await run(request, create)
    notice(request, f"Created the smart group {created!r}: {count:,} reference(s) match its search.")
    raise redirect(_group_url(group_id))


@routes.post("/groups/{group}/query")
async def change_query(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    group = request.match_info["group"]
    query = _text(form, "query", "A smart group's search", MAX_SMART_QUERY)

    def change(library: Library) -> tuple[str, int]:
        library.groups.by_id(group)
        library.groups.set_query(group, query)
        return library.groups.by_id(group).name, library.refs.count(group=group)

    name, count = await run(request, change)
    notice(request, f"Changed the search of {name!r}: {count:,} reference(s) match.")
    raise redirect(_group_url(group))


@routes.post("/groups/{group}/set")
async def file_group(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    group = request.match_info["group"]
    set_id = str(form.get("set") or "") or None

    def file(library: Library) -> tuple[str, str | None]:
        library.groups.by_id(group)
        library.groups.file_many([group], set_id)
        return library.groups.by_id(group).name, library.sets.find(set_id).name if set_id else None

    name, set_name = await run(request, file)
    notice(request, f"Moved {name!r} into the group set {set_name!r}." if set_name else f"{name!r} is in no set now.")
    raise redirect(_group_url(group))


# --- group sets ----------------------------------------------------------------------------------


@routes.post("/sets")
async def create_set(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = _text(form, "name", "A group set name", MAX_GROUP_NAME)

    def create(library: Library) -> str:
        return library.sets.find(library.sets.create(name)).name

    created = await run(request, create)
    notice(request, f"Created the group set {created!r}; move groups into it from a group's list.")
    raise redirect("/")


def _set_row(library: Library, set_id: str) -> GroupSetRow:
    found = library.sets.find(set_id)
    return next(s for s in library.sets.rows() if s.id == found.id)


@routes.get("/sets/{set}")
async def set_page(request: web.Request) -> web.StreamResponse:
    set_id = request.match_info["set"]
    found = await run(request, lambda library: _set_row(library, set_id))
    return page(request, "group_set.html", found=found)


@routes.post("/sets/{set}/rename")
async def rename_set(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    set_id = request.match_info["set"]
    name = _text(form, "name", "A group set name", MAX_GROUP_NAME)

    def rename(library: Library) -> GroupName:
        found = library.sets.find(set_id)
        library.sets.rename(found.id, name)
        return library.sets.find(found.id)

    renamed = await run(request, rename)
    notice(request, f"Renamed the group set to {renamed.name!r}.")
    raise redirect(f"/sets/{renamed.id}")


@routes.get("/sets/{set}/delete")
async def confirm_delete_set(request: web.Request) -> web.StreamResponse:
    set_id = request.match_info["set"]
    found = await run(request, lambda library: library.sets.find(set_id))
    return page(
        request,
        "library_confirm.html",
        heading=f"Delete the group set {found.name!r}?",
        explanation="The set goes, on every device this library syncs with; its groups stay, in no set.",
        action=f"/sets/{found.id}/delete",
        button="Delete the group set",
        cancel=f"/sets/{found.id}",
    )


@routes.post("/sets/{set}/delete")
async def delete_set(request: web.Request) -> web.StreamResponse:
    set_id = request.match_info["set"]
    found = await run(request, lambda library: library.sets.delete(set_id))
    notice(request, f"Deleted the group set {found.name!r}; its groups are still there, in no set.")
    raise redirect("/")


# --- the library's name --------------------------------------------------------------------------


@routes.post("/library/rename")
async def rename_library(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = _text(form, "name", "A library name", MAX_LIBRARY_NAME)
    renamed = await run(request, lambda library: library.rename(name))
    notice(request, f"Renamed the library to {renamed!r}; the other devices take the name at their next sync.")
    raise redirect("/")
