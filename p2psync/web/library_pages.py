"""The library: the reference list (paging, sorting, search), groups, trash."""

from __future__ import annotations

from aiohttp import web

from p2psync.store.library import Library
from p2psync.web.app import page, run

routes = web.RouteTableDef()
PAGE_SIZE = 50


@routes.get("/")
async def references(request: web.Request) -> web.StreamResponse:
    def first_page(library: Library) -> list[object]:
        return list(library.list_references(limit=PAGE_SIZE))

    rows = await run(request, first_page)
    return page(request, "library.html", references=rows)
