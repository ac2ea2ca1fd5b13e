"""conflicts list / show / resolve."""

from __future__ import annotations

from typing import Any

import click

from p2psync.cli.common import json_option, library_option, open_library, print_json, truncate
from p2psync.errors import InvalidValue
from p2psync.store.library.conflicts import field_label, value_text


@click.group(short_help="See and resolve sync conflicts.")
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


@conflicts.command("show", short_help="Show every version of each conflicted field.")
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
        click.echo(f"\n{field_label(name)} ({name}):")
        for item in items:
            who = f"{item['device_name']} ({item['device'][:7]}{', this device' if item['this_device'] else ''})"
            click.echo(f"  {who:<40} {item['time']}  {value_text(name, item['value'])}")


@conflicts.command("resolve", short_help="Choose versions, or type a new value.")
@click.argument("ref_id", metavar="ID")
@click.option("--keep", help="Whose version to keep for every field: local, remote, or a device id.")
@click.option(
    "--field",
    "field_choices",
    multiple=True,
    metavar="NAME=WHO",
    help="Whose version to keep for one field (local, remote or a device id); repeatable.",
)
@click.option(
    "--value",
    "typed_values",
    multiple=True,
    metavar="NAME=VALUE",
    help="A new value for one conflicted field instead of any version (as 'ref edit --field'); repeatable.",
)
@library_option
@json_option
def resolve(
    ref_id: str, keep: str | None, field_choices: tuple[str, ...], typed_values: tuple[str, ...], as_json: bool
) -> None:
    """Choose versions, or type a new value; the choice reaches every machine with the next sync.

    \b
    Examples:
      p2psync conflicts resolve 74vm --keep local
      p2psync conflicts resolve 74vm --field title=remote --field year=GNLJEFF
      p2psync conflicts resolve 74vm --field attachment:paper.pdf=local
      p2psync conflicts resolve 74vm --value "title=Plasticity of neurons"
    Editing a conflicted field with 'p2psync ref edit' also resolves it.
    """
    choices = _pairs(field_choices, "--field", "NAME=WHO, e.g. --field title=local")
    values = _pairs(typed_values, "--value", "NAME=VALUE, e.g. --value year=2021")
    if not keep and not choices and not values:
        raise InvalidValue("Say which versions to keep: --keep local|remote|DEVICE, or --field NAME=WHO.")
    with open_library() as library:
        resolved = library.conflicts.resolve(ref_id, keep=keep, fields=choices, values=values)
        record = library.refs.get(ref_id) if "deleted" not in resolved or _still_there(library, ref_id) else None
    if as_json:
        print_json({"resolved": resolved, "reference": record.as_dict() if record else None})
    else:
        gone = record is None
        click.echo(f"Resolved {', '.join(resolved)}" + ("; the reference stays deleted." if gone else "."))


def _pairs(items: tuple[str, ...], option: str, form: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise InvalidValue(f"{option} {item!r} needs the form {form}.")
        name, text = item.split("=", 1)
        out[name.strip()] = text.strip() if option == "--field" else text
    return out


def _still_there(library: Any, ref_id: str) -> bool:
    try:
        library.resolve_ref(ref_id)
    except Exception:
        return False
    return True
