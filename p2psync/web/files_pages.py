"""The Files page: import a file, download an export in each format, make and download a backup.

The same functions as `p2psync import`, `p2psync export` and `p2psync backup` (store/exchange.py,
store/backup.py); the page shows the lines the command line prints. A backup is kept where
pairing keeps its backups (beside the library folder) and streamed to the browser as a download.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from p2psync import formats
from p2psync.errors import InvalidInput, InvalidValue, P2PSyncError
from p2psync.model.attachments import validate_name
from p2psync.store import backup as backups
from p2psync.store import exchange
from p2psync.store.library import Library
from p2psync.web.app import notice, page, run
from p2psync.web.reference_pages import READ_CHUNK, disposition, stream_file

routes = web.RouteTableDef()
IMPORT_FIELDS = frozenset({"csrf", "file", "format", "encoding", "skip_invalid", "allow_duplicates"})
CHOICES = ("format", "encoding", "skip_invalid", "allow_duplicates")
MAX_SELECTED = 5_000  # as the library page's selection
SHOWN_IMPORTED = 20  # the imported references the page links to (the library lists them all)
FORMAT_CHOICES = tuple((name, formats.LABELS[name]) for name in formats.FORMATS)


def _groups(library: Library) -> list[dict[str, Any]]:
    return library.list_groups()


async def _page(request: web.Request, status: int = 200, **result: Any) -> web.Response:
    values: dict[str, Any] = {"summary": [], "imported": [], "import_error": "", "chosen": dict.fromkeys(CHOICES, "")}
    values.update(result)
    return page(
        request, "files.html", status=status, formats=FORMAT_CHOICES, groups=await run(request, _groups), **values
    )


@routes.get("/files")
async def files(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post("/files/import")
async def import_file(request: web.Request) -> web.StreamResponse:
    posted = await request.post()
    for key in posted:
        if key not in IMPORT_FIELDS:
            raise InvalidInput(f"The import form sent {key[:60]!r}, which it does not have.")
    chosen = {key: posted.get(key, "") for key in CHOICES}
    if any(not isinstance(v, str) for v in chosen.values()):
        raise InvalidInput("The import form sent a file where it expects a choice.")
    upload = posted.get("file")
    try:
        if not isinstance(upload, FileField) or not upload.filename:
            raise InvalidInput("Choose a file to import.")
        outcome, name = await _import(request, upload, chosen)
    except P2PSyncError as exc:  # said beside the import form; nothing was imported
        return await _page(request, status=400, import_error=exc.message, chosen=chosen)
    shown = outcome.report.imported[:SHOWN_IMPORTED]
    imported = await run(request, lambda library: [library.refs.get(ref_id) for ref_id in shown])
    return await _page(request, summary=outcome.summary(name), imported=imported, chosen=chosen)


async def _import(
    request: web.Request, upload: FileField, chosen: dict[str, Any]
) -> tuple[exchange.ImportOutcome, str]:
    """Read the upload as `p2psync import` reads a file (off the event loop and the library's
    thread), then import it on the library's thread. The copy is named as the upload was, when
    that is a safe file name, since the format guess and the messages use the name."""
    try:
        name = validate_name(upload.filename)
    except InvalidInput:
        name = "the uploaded file"
    folder = Path(tempfile.mkdtemp(prefix="p2psync-import-"))
    try:
        path = folder / name
        loop = asyncio.get_running_loop()

        def read() -> exchange.ParsedFile:
            upload.file.seek(0)
            with path.open("wb") as out:
                shutil.copyfileobj(upload.file, out, READ_CHUNK)
            return exchange.read_for_import(
                path, chosen["format"] or None, chosen["encoding"].strip() or None, bool(chosen["skip_invalid"])
            )

        parsed = await loop.run_in_executor(None, read)
        allow = bool(chosen["allow_duplicates"])
        outcome = await run(request, exchange.import_parsed, parsed, None, allow)
        return outcome, name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def file_stem(library_name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in library_name).strip("-")[:40] or "library"


@routes.get("/files/export")
async def export(request: web.Request) -> web.StreamResponse:
    fmt = formats.format_name(request.query.get("format", ""))  # FormatError names the formats
    group = request.query.get("group") or None
    exported = await run(request, exchange.export_text, fmt, group)
    name = await run(request, lambda library: file_stem(library.name))
    if group is not None:
        found = await run(request, lambda library: library.find_group(group))
        name += "-" + file_stem(found["name"])
    return web.Response(
        body=exported.text.encode("utf-8"),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": disposition("attachment", name + formats.DEFAULT_EXTENSIONS[fmt]),
        },
    )


@routes.post("/files/selection")
async def selection(request: web.Request) -> web.StreamResponse:
    """From the library page's selection: ask in which format to export the selected references."""
    refs = _selected(await request.post())
    return page(request, "files_selection.html", refs=refs, formats=FORMAT_CHOICES)


@routes.post("/files/export-selected")
async def export_selected(request: web.Request) -> web.StreamResponse:
    posted = await request.post()
    for key in posted:
        if key not in ("csrf", "ref", "format"):
            raise InvalidInput(f"The export form sent {key[:60]!r}, which it does not have.")
    refs = _selected(posted)
    fmt = formats.format_name(str(posted.get("format", "")))
    exported = await run(request, lambda library: exchange.export_text(library, fmt, ids=refs))
    name = await run(request, lambda library: file_stem(library.name))
    return web.Response(
        body=exported.text.encode("utf-8"),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": disposition("attachment", f"{name}-selection{formats.DEFAULT_EXTENSIONS[fmt]}"),
        },
    )


def _selected(posted: Any) -> list[str]:
    refs = [r for r in posted.getall("ref", []) if isinstance(r, str)]
    if not refs:
        raise InvalidValue("Select the references to export first.")
    if len(refs) > MAX_SELECTED:
        raise InvalidValue(f"Export at most {MAX_SELECTED:,} selected references at a time; export a group instead.")
    return list(dict.fromkeys(refs))


def _backup(library: Library) -> dict[str, Any]:
    return backups.backup(library, backups.backup_path(library))


@routes.post("/files/backup")
async def backup(request: web.Request) -> web.StreamResponse:
    """`p2psync backup` into the folder beside the library, then the archive as a download."""
    manifest = await run(request, _backup)
    path = Path(manifest["path"])
    notice(
        request,
        f"Backed up {manifest['references']} references, {manifest['attachments']} attachments "
        f"to {manifest['path']} ({manifest['bytes']:,} bytes).",
    )
    headers = {"Content-Type": "application/zip", "Content-Disposition": disposition("attachment", path.name)}
    return await stream_file(request, path, headers)
