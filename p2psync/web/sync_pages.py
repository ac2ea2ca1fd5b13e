"""(Being built: see p2psync/web/__init__.py.)"""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
