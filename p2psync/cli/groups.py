"""group create / rename / delete / add / remove / list; group smart ...; group set ...

A smart group is a saved search whose members are worked out when it is read; a group set is a
named folder of groups. Both sync like groups (store/library/groups.py, group_sets.py).
"""

from __future__ import annotations

import click

from p2psync.cli.common import json_option, library_option, open_library, print_json
from p2psync.store.library import Library
from p2psync.store.library.records import GroupRow

MEMBERS_SHOWN = 20  # per smart group in `group smart list` (all with --all)


@click.group()
def group() -> None:
    """Organise references into groups (a reference can be in many)."""


@group.command("create")
@click.argument("name")
@click.option("--set", "group_set", metavar="SET", help="File it in this group set (name or id).")
@library_option
@json_option
def create(name: str, group_set: str | None, as_json: bool) -> None:
    """Create an empty group."""
    with open_library() as library:
        group_id = library.groups.create(name, group_set=group_set)
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
    """Rename a group (plain or smart)."""
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
    """Delete a group, plain or smart.

    Its references stay in the library."""
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
    """List groups and how many references each holds.

    A smart group holds what matches its search now."""
    with open_library() as library:
        groups = library.groups.rows()
        sets = {s.id: s.name for s in library.sets.rows(groups)}
    if as_json:
        print_json([g.as_dict() for g in groups])
        return
    for g in groups:
        click.echo(f"{g.id}  {g.references:>7}  {g.name}{_where(g, sets)}")


def _where(g: GroupRow, sets: dict[str, str]) -> str:
    smart = f"  (smart: {g.query})" if g.query is not None else ""
    return smart + (f"  [set: {sets[g.set]}]" if g.set in sets else "")


# --- smart groups -------------------------------------------------------------------------------


@group.group("smart")
def smart() -> None:
    """Smart groups: saved searches that stay current.

    A smart group's references are always the ones that match its search now.

    The search takes the words 'ref search' takes: every word must match, as a word or the start
    of one, in the title, authors, abstract, keywords or notes. Rename or delete a smart group
    with 'group rename' and 'group delete'; list its references with 'ref list --group NAME'.
    """


@smart.command("create")
@click.argument("name")
@click.argument("query")
@click.option("--set", "group_set", metavar="SET", help="File it in this group set (name or id).")
@library_option
@json_option
def smart_create(name: str, query: str, group_set: str | None, as_json: bool) -> None:
    """Create a smart group from a search.

    The smart group NAME holds the references that match QUERY, whenever it is read."""
    with open_library() as library:
        group_id = library.groups.create_smart(name, query, group_set)
        found = _row(library, group_id)
    if as_json:
        print_json(found.as_dict())
    else:
        click.echo(
            f"Created smart group {found.name!r} ({group_id}): {found.references} reference(s) match {found.query!r}."
        )


@smart.command("edit")
@click.argument("name")
@click.argument("query")
@library_option
@json_option
def smart_edit(name: str, query: str, as_json: bool) -> None:
    """Change the search of smart group NAME to QUERY."""
    with open_library() as library:
        group_id = library.groups.find(name).id
        library.groups.set_query(group_id, query)
        found = _row(library, group_id)
    if as_json:
        print_json(found.as_dict())
    else:
        click.echo(f"{found.name!r} now holds the {found.references} reference(s) that match {found.query!r}.")


@smart.command("list")
@click.option("--all", "show_all", is_flag=True, help=f"Every member, not only the first {MEMBERS_SHOWN}.")
@library_option
@json_option
def smart_list(show_all: bool, as_json: bool) -> None:
    """List smart groups and what matches each now."""
    limit = None if show_all else MEMBERS_SHOWN
    with open_library() as library:
        found = []
        for g in library.groups.rows(system=False):
            if g.query is not None:
                members = list(library.groups.smart_members(g.query, limit))
                found.append((g, members))
    if as_json:
        print_json([{**g.as_dict(), "members": [m.as_dict() for m in members]} for g, members in found])
        return
    if not found:
        click.echo("No smart groups; create one with 'p2psync group smart create NAME QUERY'.")
    for g, members in found:
        click.echo(f"{g.id}  {g.references:>7}  {g.name}  (smart: {g.query})")
        for m in members:
            click.echo(f"    {m.id}  {m.title or ''}")
        if len(members) < g.references:
            click.echo(f"    ... and {g.references - len(members)} more ('ref list --group {g.id}')")


def _row(library: Library, group_id: str) -> GroupRow:
    return next(g for g in library.groups.rows(system=False) if g.id == group_id)


# --- group sets ---------------------------------------------------------------------------------


@group.group("set")
def set_() -> None:
    """Group sets: named folders of groups.

    A group, plain or smart, is in at most one set."""


@set_.command("create")
@click.argument("name")
@library_option
@json_option
def set_create(name: str, as_json: bool) -> None:
    """Create an empty group set."""
    with open_library() as library:
        set_id = library.sets.create(name)
        found = library.sets.find(set_id)
    if as_json:
        print_json(found.as_dict())
    else:
        click.echo(f"Created group set {found.name!r} ({set_id}).")


@set_.command("rename")
@click.argument("name")
@click.argument("new_name")
@library_option
@json_option
def set_rename(name: str, new_name: str, as_json: bool) -> None:
    """Rename a group set."""
    with open_library() as library:
        set_id = library.sets.find(name).id
        library.sets.rename(set_id, new_name)
        found = library.sets.find(set_id)
    if as_json:
        print_json(found.as_dict())
    else:
        click.echo(f"Renamed the group set to {found.name!r}.")


@set_.command("delete")
@click.argument("name")
@library_option
@json_option
def set_delete(name: str, as_json: bool) -> None:
    """Delete a group set (its groups stay, outside any set)."""
    with open_library() as library:
        found = library.sets.delete(name)
    if as_json:
        print_json({"deleted": found.as_dict()})
    else:
        click.echo(f"Deleted group set {found.name!r}; its groups are still there, outside any set.")


@set_.command("add")
@click.argument("name")
@click.argument("groups", metavar="GROUP...", nargs=-1, required=True)
@library_option
@json_option
def set_add(name: str, groups: tuple[str, ...], as_json: bool) -> None:
    """File groups in a group set (a group leaves the set it was in)."""
    with open_library() as library:
        found = library.sets.find(name)
        filed = library.groups.file_many(groups, found.id)
    if as_json:
        print_json({"set": found.as_dict(), "groups": [g.as_dict() for g in filed]})
    else:
        click.echo(f"Filed {len(filed)} group(s) in {found.name!r}.")


@set_.command("remove")
@click.argument("groups", metavar="GROUP...", nargs=-1, required=True)
@library_option
@json_option
def set_remove(groups: tuple[str, ...], as_json: bool) -> None:
    """Take groups out of their group set (they stay)."""
    with open_library() as library:
        taken = library.groups.file_many(groups, None)
    if as_json:
        print_json({"groups": [g.as_dict() for g in taken]})
    else:
        click.echo(f"Took {len(taken)} group(s) out of their set.")


@set_.command("list")
@library_option
@json_option
def set_list(as_json: bool) -> None:
    """List group sets with the groups in each."""
    with open_library() as library:
        sets = library.sets.rows()
    if as_json:
        print_json([s.as_dict() for s in sets])
        return
    if not sets:
        click.echo("No group sets; create one with 'p2psync group set create NAME'.")
    for s in sets:
        click.echo(f"{s.id}  {s.name}")
        for g in s.groups:
            click.echo(f"    {g.id}  {g.references:>7}  {g.name}" + (f"  (smart: {g.query})" if g.query else ""))
