"""Devices: this device's name (rename), the members with last seen and address, removing one
with a confirmation. The same library functions as `p2psync device rename`, `p2psync peers`,
`p2psync status` (the peers' records) and `p2psync peers remove`; pairing is pair_pages.py."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from p2psync.errors import InvalidValue, UnknownDevice
from p2psync.model.devices import is_device_id
from p2psync.relay import state as relay_state
from p2psync.store import peers as peer_store
from p2psync.store.library import Library, members
from p2psync.store.library.records import Device
from p2psync.web.app import notice, page, redirect, run

routes = web.RouteTableDef()
MAX_FORM_FIELD = 4096  # a rename form's name: anything longer is refused before it is read further


@dataclass(frozen=True)
class DevicesView:
    this: Device
    peers: list[peer_store.PeerStatus]
    account_device: str | None  # the online account's key, a member like the others (status's relay line)


def _view(library: Library) -> DevicesView:
    this = library.members.this()
    relay = relay_state.summary(library)
    return DevicesView(this, peer_store.peer_status(library), relay.get("account_device") if relay else None)


def _member(library: Library, device: str) -> Device:
    """The member named by its full id, exactly (a page posts the full id; a forged or partial
    one names nobody)."""
    if not is_device_id(device):
        raise UnknownDevice(f"No single member device matches {device[:40]!r}; see 'p2psync peers'.")
    return library.members.find(device)


@routes.get("/devices")
async def devices(request: web.Request) -> web.StreamResponse:
    view = await run(request, _view)
    return page(request, "devices.html", view=view, name_error="", name_value=view.this.name)


@routes.post("/devices/rename")
async def rename(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = form.get("name")
    if not isinstance(name, str):
        name = ""
    try:
        if len(name) > MAX_FORM_FIELD:
            raise InvalidValue(f"A device name is at most 100 characters; this one has {len(name.strip())}.")
        renamed = await run(request, lambda library: library.members.rename(name))
    except InvalidValue as exc:
        view = await run(request, _view)
        shown = name[:MAX_FORM_FIELD]
        return page(request, "devices.html", status=400, view=view, name_error=exc.message, name_value=shown)
    notice(request, members.renamed_sentence(renamed))
    return redirect("/devices")


@routes.get("/devices/{device}/remove")
async def confirm_removal(request: web.Request) -> web.StreamResponse:
    device = request.match_info["device"]
    target, linked = await run(request, lambda library: (_member(library, device), relay_state.is_linked(library)))
    return page(
        request,
        "devices_remove.html",
        target=target,
        question=members.removal_question(target),
        explained=members.REMOVAL_EXPLAINED,
        relay_advice=relay_state.REMOVAL_ADVICE if linked else "",
    )


@routes.post("/devices/{device}/remove")
async def remove(request: web.Request) -> web.StreamResponse:
    device = request.match_info["device"]

    def removing(library: Library) -> tuple[Device, bool]:
        _member(library, device)
        return library.members.revoke(device), relay_state.is_linked(library)

    removed, linked = await run(request, removing)
    notice(request, members.removed_sentence(removed))
    if linked:
        notice(request, relay_state.REMOVAL_ADVICE)
    return redirect("/devices")
