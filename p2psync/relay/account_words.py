"""What the account commands say, in one place: `p2psync account ...` prints these lines and the
web app's Account page shows the same ones (no second wording of any message)."""

from __future__ import annotations

from typing import Any

from p2psync.model.sizes import human_size
from p2psync.relay import account_recovery
from p2psync.relay.client import Account
from p2psync.relay.link_rules import LoginMode, LoginReport

NOT_LINKED = "Not linked to an online account; see 'p2psync account signup' or 'p2psync account login'."
RELAY_NOT_TOLD = "The relay could not be told; this device forgot its login all the same."
EMPTY_PASSWORD = "The password is empty; type the account's password."
LOGIN_HOW = {
    LoginMode.BOUND: "this library is now the account's library",
    LoginMode.SAME: "the account holds this library",
    LoginMode.JOINED: "this library received the account's library",
    LoginMode.MERGED: "this library was merged with the account's library",
}


def logged_in_sentence(report: LoginReport, signup: bool) -> str:
    assert report.mode is not None  # (every login that returns has bound or joined)
    return f"{'Signed up' if signup else 'Logged in'} as {report.email} on {report.relay}: {LOGIN_HOW[report.mode]}."


def status_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """`account status` of a linked library, as (label, text) lines."""
    lines = [
        ("Relay", str(data["relay"])),
        ("E-mail", f"{data['email']}" + ("" if data["logged_in"] else " (logged out)")),
    ]
    if data.get("bound_library") is not None or data.get("usage") is not None:
        bound = data["bound_library"]
        lines.append(("Holds", "this library" if data.get("bound_here") else (bound or "no library (unbound)")))
    usage = data.get("usage")
    if usage:
        quota = usage["quota_bytes"]
        limit = human_size(quota) if quota is not None else "no limit"
        counts = f"({usage['change_sets']} change sets, {usage['chunks']} chunks)"
        lines.append(("Storage", f"{human_size(usage['used_bytes'])} of {limit} {counts}"))
    recovery = data.get("recovery")
    if recovery:
        lines.append(("Recovery", account_recovery.status_text(recovery["epoch"], recovery["key_epoch"])))
    moved = data.get("moved") or {}
    last = f"{data['last_sync']}" if data["last_sync"] else "never"
    lines.append(("Last sync", last + (moved_text(moved) if data["last_sync"] else "")))
    if data["last_error"]:
        lines.append(("Last error", f"({data['last_error_at']}) {data['last_error']}"))
    if data.get("online_error"):
        lines.append(("Now", str(data["online_error"])))
    return lines


def moved_text(moved: dict[str, Any]) -> str:
    if not moved:
        return ""
    return (
        f": {moved.get('received', 0)} change sets in, {moved.get('sent', 0)} out, "
        f"{moved.get('files_in', 0)} files in, {moved.get('chunks_out', 0)} chunks out"
    )


def logged_out_sentence(data: dict[str, Any]) -> str:
    return f"Logged out of {data['email']} on {data['relay']}."


def purge_question(info: Account) -> str:
    return (
        f"Delete everything the account {info.email} stores on the relay ({info.change_sets} change sets, "
        f"{info.chunks} attachment chunks, {human_size(info.used_bytes)})? The references on your devices stay."
    )


def purged_sentence(data: dict[str, Any]) -> str:
    return (
        f"The account {data['email']} on {data['relay']} is empty and holds no library now; "
        "log in from the library it should hold to bind it again."
    )
