"""Sync Conflicts: the references whose fields were changed differently on two devices, and for
one of them every version side by side, to choose from or to replace by a new value.

The list is `library.conflicts.listing()` and the versions `library.conflicts.versions(ref)`,
what `p2psync conflicts list` and `conflicts show` print. Submitting the form calls
`library.conflicts.resolve(ref, fields=..., values=...)`, the very operation of
`p2psync conflicts resolve --field NAME=WHO --value NAME=VALUE`: one write that has seen every
version, so the resolution reaches every device with the next sync. Whatever the browser sends
is checked there (a field not in conflict, a device without a version, a value the field
catalogue refuses) and refused in one sentence with nothing changed; the form comes back with
the choices made and the sentence at its top.

An attachment in conflict shows each version's file with a link that opens it (PDFs and images
in the browser, anything else as a download, so no file runs as a page of this app).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from p2psync.errors import InvalidValue, NotFound, P2PSyncError
from p2psync.model import fields as catalogue
from p2psync.store.library import ATTACHMENT_FIELD, Library
from p2psync.store.library.conflicts import field_label, value_text
from p2psync.web.app import notice, page, redirect, run

routes = web.RouteTableDef()
NEW = "new"  # the radio value that means "the typed value", never a device id (ids are upper case)
FORM_LIMIT = 4 * 1024 * 1024  # a resolution form is small; a huge one is refused before it is read
INLINE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})


@dataclass(frozen=True)
class Version:
    """One device's version of a conflicted field, as the page shows it."""

    device: str
    device_name: str
    time: str
    this_device: bool
    text: str
    sha256: str | None = None  # an attachment version: its file, if it is on this machine
    present: bool = False
    size: int = 0


@dataclass(frozen=True)
class FieldConflict:
    name: str
    label: str
    versions: tuple[Version, ...]
    typed: bool  # a new value may be typed (a catalogue field, not an attachment or the deletion)
    attachment: bool

    @property
    def file_name(self) -> str:
        return self.name[len(ATTACHMENT_FIELD) :] if self.attachment else ""


@dataclass(frozen=True)
class ConflictView:
    id: str
    title: str
    fields: tuple[FieldConflict, ...]


def conflict_view(library: Library, ref: str) -> ConflictView:
    """The reference's conflicts, this device's version first in each field, then the others'."""
    record = library.refs.get(ref)
    out = []
    for name, items in library.conflicts.versions(record.id).items():
        attachment = name.startswith(ATTACHMENT_FIELD)
        versions = []
        for item in sorted(items, key=lambda v: not v["this_device"]):
            value = item["value"]
            file = value if attachment and isinstance(value, dict) else None
            versions.append(
                Version(
                    device=item["device"],
                    device_name=item["device_name"],
                    time=item["time"],
                    this_device=item["this_device"],
                    text=_text(name, value),
                    sha256=file["sha256"] if file else None,
                    present=bool(file and file["present"]),
                    size=int(file["size"]) if file else 0,
                )
            )
        typed = name in catalogue.FIELDS
        out.append(FieldConflict(name, field_label(name), tuple(versions), typed, attachment))
    return ConflictView(record.id, record.title or "", tuple(out))


def _text(name: str, value: Any) -> str:
    if name.startswith(ATTACHMENT_FIELD) and isinstance(value, dict):  # (no path on a page: the link opens it)
        return f"{value['size']:,} bytes, sha256:{value['sha256'][:12]}"
    return value_text(name, value)


@dataclass(frozen=True)
class Listed:
    id: str
    title: str
    labels: tuple[str, ...]


def listing(library: Library) -> list[Listed]:
    return [
        Listed(item["id"], item["title"] or "", tuple(field_label(n) for n in item["fields"]))
        for item in library.conflicts.listing()
    ]


def choices_from(form: MultiDictProxy[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The form as `conflicts resolve` takes it: field -> device whose version to keep, and
    field -> a typed new value. Names are the form's own; the library checks every one."""
    keep: dict[str, str] = {}
    values: dict[str, str] = {}
    for key, choice in form.items():
        if not key.startswith("keep:") or not isinstance(choice, str):
            continue
        name = key[len("keep:") :]
        if choice == NEW:
            typed = form.get(f"value:{name}", "")
            values[name] = typed if isinstance(typed, str) else ""
        else:
            keep[name] = choice
    return keep, values


@routes.get("/conflicts")
async def conflicts_list(request: web.Request) -> web.StreamResponse:
    return page(request, "conflicts.html", conflicts=await run(request, listing))


@routes.get("/conflicts/{ref}")
async def conflict_page(request: web.Request) -> web.StreamResponse:
    view = await run(request, conflict_view, request.match_info["ref"])
    return page(request, "conflicts_ref.html", view=view, error="", chosen={}, typed={}, new=NEW)


@routes.post("/conflicts/{ref}")
async def resolve(request: web.Request) -> web.StreamResponse:
    ref = request.match_info["ref"]
    if (request.content_length or 0) > FORM_LIMIT:
        raise InvalidValue("That form is far too large for choosing versions; nothing was changed.")
    form = await request.post()
    keep, values = choices_from(form)
    try:
        if not keep and not values:
            raise InvalidValue("Choose a version (or type a new value) for each field in conflict.")
        done = await run(request, lambda library: library.conflicts.resolve(ref, fields=keep, values=values))
    except NotFound:
        raise
    except P2PSyncError as exc:  # refused, nothing changed: the form again, with the choices made
        view = await run(request, conflict_view, ref)
        chosen = {**keep, **{name: NEW for name in values}}
        return page(
            request, "conflicts_ref.html", 400, view=view, error=exc.message, chosen=chosen, typed=values, new=NEW
        )
    labels = ", ".join(field_label(name) for name in done)
    notice(request, f"Resolved {labels}; the other devices get the resolution with the next sync.")
    raise redirect("/conflicts")


@routes.get("/conflicts/{ref}/file")
async def version_file(request: web.Request) -> web.StreamResponse:
    """One version of a conflicted attachment, named by its field and hash (never by a path)."""
    ref, field, sha = request.match_info["ref"], request.query.get("field", ""), request.query.get("sha", "")

    def find(library: Library) -> tuple[str, str] | None:
        for item in library.conflicts.versions(ref).get(field, []) if field.startswith(ATTACHMENT_FIELD) else []:
            value = item["value"]
            if isinstance(value, dict) and value["sha256"] == sha and value["present"]:
                return str(value["path"]), field[len(ATTACHMENT_FIELD) :]
        return None

    found = await run(request, find)
    if found is None:
        raise NotFound("That version of the attachment is not on this machine (or is not in conflict).")
    path, name = found
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = kind in INLINE_TYPES
    return web.FileResponse(
        path,
        headers={
            "Content-Type": kind if inline else "application/octet-stream",
            "Content-Disposition": f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(name)}",
        },
    )
