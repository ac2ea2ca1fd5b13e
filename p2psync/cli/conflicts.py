"""conflicts list / show / resolve."""

from __future__ import annotations

from typing import Any

import click

from p2psync.cli.common import json_option, library_option, open_library, print_json, truncate
from p2psync.errors import InvalidValue
from p2psync.model import fields as catalogue
from p2psync.store.library import ATTACHMENT_FIELD


@click.group()
def conflicts() -> None:
    """See and resolve sync conflicts (a field changed differently on two machines).

    Conflicted references are also listed in the group "Sync Conflicts" until resolved. Every
    version is kept; meanwhile every machine shows the same provisional value (the newest).
    """


@conflicts.command("list")
@library_option
@json_option
def list_(as_json: bool) -> None:
    """List the references in conflict and which fields."""
    with open_library() as library:
        items = library.list_conflicts()
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("No sync conflicts.")
    for item in items:
        click.echo(f"{item['id']}  {', '.join(item['fields']):<24} {truncate(item['title'], 60)}")


@conflicts.command("show")
@click.argument("ref_id", metavar="ID")
@library_option
@json_option
def show(ref_id: str, as_json: bool) -> None:
    """Show every version of each conflicted field, side by side, with device and time."""
    with open_library() as library:
        record = library.refs.get(ref_id)
        versions = library.reference_versions(ref_id)
    if as_json:
        print_json({"id": record.id, "title": record.title, "fields": versions})
        return
    click.echo(f"{record.id}  {record.title or ''}")
    if not versions:
        click.echo("No sync conflict.")
    for name, items in versions.items():
        if name.startswith(ATTACHMENT_FIELD):
            label = f"Attachment {name[len(ATTACHMENT_FIELD) :]}"
        else:
            label = "Deleted / changed" if name == "deleted" else catalogue.FIELDS[name].label
        click.echo(f"\n{label} ({name}):")
        for item in items:
            who = f"{item['device_name']} ({item['device'][:7]}{', this device' if item['this_device'] else ''})"
            click.echo(f"  {who:<40} {item['time']}  {_value(name, item['value'])}")


def _value(name: str, value: Any) -> str:
    if name.startswith(ATTACHMENT_FIELD):
        if value is None:
            return "removed the attachment"
        where = value["path"] if value["present"] else "not on this machine yet"
        return f"{value['size']:,} bytes, sha256:{value['sha256'][:12]}, {where}"
    if name == "deleted":
        return "deleted the reference" if value else "changed it meanwhile"
    return catalogue.format_value(name, value) or "(empty)"


@conflicts.command("resolve")
@click.argument("ref_id", metavar="ID")
@click.option("--keep", help="Whose version to keep for every field: local, remote, or a device id.")
@click.option(
    "--field",
    "field_choices",
    multiple=True,
    metavar="NAME=WHO",
    help="Whose version to keep for one field (local, remote or a device id); repeatable.",
)
@library_option
@json_option
def resolve(ref_id: str, keep: str | None, field_choices: tuple[str, ...], as_json: bool) -> None:
    """Choose versions; the choice reaches every machine with the next sync.

    \b
    Examples:
      p2psync conflicts resolve k3x9 --keep local
      p2psync conflicts resolve k3x9 --field title=remote --field year=GNLJEFF
      p2psync conflicts resolve k3x9 --field attachment:paper.pdf=local
    Editing a conflicted field with 'p2psync ref edit' also resolves it.
    """
    choices: dict[str, str] = {}
    for item in field_choices:
        if "=" not in item:
            raise InvalidValue(f"--field {item!r} needs the form NAME=WHO, e.g. --field title=local.")
        name, who = item.split("=", 1)
        choices[name.strip()] = who.strip()
    if not keep and not choices:
        raise InvalidValue("Say which versions to keep: --keep local|remote|DEVICE, or --field NAME=WHO.")
    with open_library() as library:
        resolved = library.resolve_conflict(ref_id, keep=keep, fields=choices)
        record = library.refs.get(ref_id) if "deleted" not in resolved or _still_there(library, ref_id) else None
    if as_json:
        print_json({"resolved": resolved, "reference": record.as_dict() if record else None})
    else:
        gone = record is None
        click.echo(f"Resolved {', '.join(resolved)}" + ("; the reference stays deleted." if gone else "."))


def _still_there(library: Any, ref_id: str) -> bool:
    try:
        library.resolve_ref(ref_id)
    except Exception:
        return False
    return True
