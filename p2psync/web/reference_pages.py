"""A reference's page: every field, its groups, its attachments; edit and create with the field
catalogue's messages beside each field; trash and restore; attach by upload, open, remove.

Every change is the library function the command line calls (`ref add/edit`, `ref rm`,
`trash restore`, `attach`, `attachment rm`); the form is read by reference_form.py with the
catalogue's parse functions. An attachment is served so that it can never run as this app's
page: a PDF inline as application/pdf, anything else as a download (never text/html).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_request import FileField

from p2psync.errors import InvalidInput, UnknownAttachment
from p2psync.model.attachments import validate_name
from p2psync.model.groups import SYNC_CONFLICTS_ID
from p2psync.store.library.records import ReferenceDetail
from p2psync.web.app import SECURITY_HEADERS, notice, page, redirect, run
from p2psync.web.reference_form import (
    ORIGINAL,
    TYPES,
    VALUE,
    Control,
    attachment_href,
    controls_for,
    read_form,
    shown_attachments,
    shown_fields,
    when,
)

routes = web.RouteTableDef()
READ_CHUNK = 256 * 1024


def _ref_id(request: web.Request) -> str:
    return request.match_info["ref_id"]


def _form(
    request: web.Request,
    controls: list[Control],
    action: str,
    heading: str,
    record: ReferenceDetail | None,
    status: int = 200,
) -> web.Response:
    errors = [c for c in controls if c.error]
    return page(
        request,
        "reference_edit.html",
        status=status,
        controls=controls,
        types=TYPES,
        action=action,
        heading=heading,
        record=record,
        errors=errors,
        value_prefix=VALUE,
        original_prefix=ORIGINAL,
    )


async def _posted(request: web.Request) -> list[tuple[str, Any]]:
    return list((await request.post()).items())


@routes.get("/ref/new")
async def new_form(request: web.Request) -> web.StreamResponse:
    return _form(request, controls_for({}), "/ref/new", "New reference", None)


@routes.post("/ref/new")
async def create(request: web.Request) -> web.StreamResponse:
    form = read_form(await _posted(request), new=True)
    if form.errors:
        return _form(request, form.controls, "/ref/new", "New reference", None, status=400)
    ref_id = await run(request, lambda library: library.add_reference(form.values))
    notice(request, "Added the reference.")
    raise redirect(f"/ref/{ref_id}")


@routes.get("/ref/{ref_id}")
async def show(request: web.Request) -> web.StreamResponse:
    record: ReferenceDetail = await run(request, lambda library: library.refs.show(_ref_id(request)))
    return page(
        request,
        "reference.html",
        record=record,
        fields=shown_fields(record),
        attachments=shown_attachments(record),
        title=record.title or "(untitled)",
        when=when,
        conflicts_group=SYNC_CONFLICTS_ID,  # the library page's view of it
    )


@routes.get("/ref/{ref_id}/edit")
async def edit_form(request: web.Request) -> web.StreamResponse:
    record: ReferenceDetail = await run(request, lambda library: library.refs.get(_ref_id(request)))
    return _form(request, controls_for(record.fields), f"/ref/{record.id}/edit", "Edit reference", record)


@routes.post("/ref/{ref_id}/edit")
async def edit(request: web.Request) -> web.StreamResponse:
    record: ReferenceDetail = await run(request, lambda library: library.refs.get(_ref_id(request)))
    form = read_form(await _posted(request), new=False)
    if form.errors:
        return _form(request, form.controls, f"/ref/{record.id}/edit", "Edit reference", record, status=400)
    changed = bool(form.values) and await run(request, lambda library: library.edit_reference(record.id, form.values))
    notice(request, f"Updated {record.id}." if changed else f"Nothing to change in {record.id}.")
    raise redirect(f"/ref/{record.id}")


@routes.post("/ref/{ref_id}/trash")
async def trash(request: web.Request) -> web.StreamResponse:
    ref_id = await run(request, lambda library: library.resolve_ref(_ref_id(request)))
    moved = await run(request, lambda library: library.trash_reference(ref_id))
    notice(request, "Moved the reference to the trash." if moved else "The reference was already in the trash.")
    raise redirect(f"/ref/{ref_id}")


@routes.post("/ref/{ref_id}/restore")
async def restore(request: web.Request) -> web.StreamResponse:
    ref_id = await run(request, lambda library: library.resolve_ref(_ref_id(request)))
    await run(request, lambda library: library.restore_reference(ref_id))
    notice(request, "Restored 1 reference(s).")
    raise redirect(f"/ref/{ref_id}")


# --- attachments ----------------------------------------------------------------------------------


@routes.post("/ref/{ref_id}/attach")
async def attach(request: web.Request) -> web.StreamResponse:
    """Attach the uploaded file(s) with `p2psync attach`'s function; their names are checked by
    the library's rules (model/attachments.py) before a byte is copied."""
    ref_id = await run(request, lambda library: library.resolve_ref(_ref_id(request)))
    posted = await request.post()
    for key in posted:
        if key not in ("file", "csrf"):
            raise InvalidInput(f"The upload sent {key[:60]!r}; only files are attached here.")
    uploads = [f for f in posted.getall("file", []) if isinstance(f, FileField) and f.filename]
    if not uploads:
        raise InvalidInput("Choose a file to attach.")
    for upload in uploads:
        validate_name(upload.filename)
    said = [await _attach_one(request, ref_id, upload.file, upload.filename) for upload in uploads]
    if "application/json" in request.headers.get("Accept", ""):  # the page's drag and drop
        return web.json_response({"attached": said})
    for text in said:
        notice(request, text)
    raise redirect(f"/ref/{ref_id}")


async def _attach_one(request: web.Request, ref_id: str, stream: IO[bytes], name: str) -> str:
    """Copy the upload to a file of our own (off the event loop), then attach that file; say
    what was done in the command line's words."""
    folder = Path(tempfile.mkdtemp(prefix="p2psync-upload-"))
    try:
        staged = folder / "upload"
        await asyncio.get_running_loop().run_in_executor(None, _copy, stream, staged)
        result = await run(request, lambda library: library.attach(ref_id, staged, name))
        return f"Attached {result['name']} ({result['size']} bytes) to {result['ref']}."
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _copy(stream: IO[bytes], target: Path) -> None:
    stream.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(stream, out, READ_CHUNK)


def content_headers(name: str) -> dict[str, str]:
    """A PDF opens in the browser; anything else is a download, so an uploaded HTML or SVG file
    never runs as this app's page (and nosniff stops the browser from guessing otherwise)."""
    if name.lower().endswith(".pdf"):
        return {"Content-Type": "application/pdf", "Content-Disposition": disposition("inline", name)}
    return {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": disposition("attachment", name),
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }


def disposition(kind: str, name: str) -> str:
    """Content-Disposition naming a file: ASCII for old clients, the whole name as RFC 6266 says."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    if ascii_name == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@routes.get("/ref/{ref_id}/file/{name}")
async def open_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = await run(request, lambda library: library.attachment_path(_ref_id(request), name))  # NotFound: 404 in words
    return await stream_file(request, path, content_headers(name))


async def stream_file(request: web.Request, path: Path, headers: dict[str, str]) -> web.StreamResponse:
    """A file as the answer, read off the event loop. (Not aiohttp's FileResponse: it would
    serve a sibling NAME.gz in place of NAME, and a reference may hold both.)"""
    loop = asyncio.get_running_loop()
    try:
        handle = await loop.run_in_executor(None, path.open, "rb")
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"The file {path.name!r} is not on this machine (any more).") from None
    with contextlib.closing(handle):
        response = web.StreamResponse(headers={**SECURITY_HEADERS, **headers})  # (sent before the middleware's)
        response.content_length = os.fstat(handle.fileno()).st_size
        await response.prepare(request)
        while chunk := await loop.run_in_executor(None, handle.read, READ_CHUNK):
            await response.write(chunk)
        await response.write_eof()
    return response


@routes.get("/ref/{ref_id}/file/{name}/remove")
async def remove_form(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    record: ReferenceDetail = await run(request, lambda library: library.refs.get(_ref_id(request)))
    if not any(item["name"] == name for item in record.attachments):
        raise UnknownAttachment(f"Reference {record.id} has no attachment named {name!r}.")
    return page(request, "reference_remove.html", record=record, name=name, href=attachment_href(record.id, name))


@routes.post("/ref/{ref_id}/file/{name}/remove")
async def remove(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    ref_id = await run(request, lambda library: library.resolve_ref(_ref_id(request)))
    await run(request, lambda library: library.remove_attachment(ref_id, name))
    notice(request, f"Removed {name}.")
    raise redirect(f"/ref/{ref_id}")
