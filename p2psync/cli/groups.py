"""group create / rename / delete / add / remove / list."""

from __future__ import annotations

import click

from p2psync.cli.common import json_option, library_option, open_library, print_json


@click.group()
def group() -> None:
    """Organise references into groups (a reference can be in many)."""


@group.command("create")
@click.argument("name")
@library_option
@json_option
def create(name: str, as_json: bool) -> None:
    """Create an empty group."""
    with open_library() as library:
        group_id = library.create_group(name)
        found = library.groups.find(group_id)
    if as_json:
        print_json(found.as_dict())
    else:
        click.echo(f"Created group {found.name!r} ({group_id}).")


@group.command("rename")
@click.argument("name")
@click.argument("new_name")
@library_option
@json_option
def rename(name: str, new_name: str, as_json: bool) -> None:
    """Rename a group."""
    with open_library() as library:
        group_id = library.groups.find(name).id
        library.rename_group(group_id, new_name)
        found = library.groups.find(group_id)
    if as_json:
        print_json(found.as_dict())
    else:
        click.echo(f"Renamed to {found.name!r}.")


@group.command("delete")
@click.argument("name")
@library_option
@json_option
def delete(name: str, as_json: bool) -> None:
    """Delete a group (its references stay in the library)."""
    with open_library() as library:
        found = library.groups.find(name)
        library.delete_group(found.id)
    if as_json:
        print_json({"deleted": found.as_dict()})
    else:
        click.echo(f"Deleted group {found.name!r}; its references are still in the library.")


@group.command("add")
@click.argument("name")
@click.argument("ref_ids", metavar="ID...", nargs=-1, required=True)
@library_option
@json_option
def add(name: str, ref_ids: tuple[str, ...], as_json: bool) -> None:
    """Put references into a group."""
    with open_library() as library:
        added = library.add_to_group(name, ref_ids)
    if as_json:
        print_json({"added": added})
    else:
        click.echo(f"Added {added} reference(s) to {name!r}.")


@group.command("remove")
@click.argument("name")
@click.argument("ref_ids", metavar="ID...", nargs=-1, required=True)
@library_option
@json_option
def remove(name: str, ref_ids: tuple[str, ...], as_json: bool) -> None:
    """Take references out of a group (they stay in the library)."""
    with open_library() as library:
        removed = library.remove_from_group(name, ref_ids)
    if as_json:
        print_json({"removed": removed})
    else:
        click.echo(f"Removed {removed} reference(s) from {name!r}.")


@group.command("list")
@library_option
@json_option
def list_(as_json: bool) -> None:
    """List groups with how many references each holds."""
    with open_library() as library:
        groups = library.list_groups()
    if as_json:
        print_json(groups)
        return
    for g in groups:
        click.echo(f"{g['id']}  {g['references']:>7}  {g['name']}")
