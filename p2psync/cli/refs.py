"""ref add / edit / show / list / search / rm."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import click

from p2psync.cli.common import (
    F,
    json_option,
    library_option,
    open_library,
    print_json,
    stream_json_list,
    truncate,
)
from p2psync.errors import InvalidValue
from p2psync.model import fields as catalogue
from p2psync.model.people import display_person, parse_person
from p2psync.store.library.references import list_sorts

if TYPE_CHECKING:  # the store is imported by the commands that open a library
    from p2psync.store.library import ReferenceRow


@click.group()
def ref() -> None:
    """Add, edit, show, list, search and trash references."""


def field_options(func: F) -> F:
    """The named shortcuts for common fields, plus --field for every other one."""
    options: list[Callable[[F], F]] = [
        click.option("--type", "ref_type", help="Reference type, e.g. journal_article, book, thesis."),
        click.option("--title", help="Title."),
        click.option("--author", "authors", multiple=True, help="An author, 'Last, First' (repeat in order)."),
        click.option("--editor", "editors", multiple=True, help="An editor, 'Last, First' (repeatable)."),
        click.option("--year", help="Year, e.g. 2021 or 'in press'."),
        click.option("--journal", help="Journal (periodical) name."),
        click.option("--doi", help="DOI, e.g. 10.1000/xyz123."),
        click.option("--url", help="URL."),
        click.option(
            "--field",
            "extra",
            multiple=True,
            metavar="KEY=VALUE",
            help="Any catalogue field (see 'p2psync ref fields'); people and keywords separated by ';'. "
            "An empty VALUE clears the field.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def collect_fields(
    ref_type: str | None,
    title: str | None,
    authors: Iterable[str],
    editors: Iterable[str],
    year: str | None,
    journal: str | None,
    doi: str | None,
    url: str | None,
    extra: Iterable[str],
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    simple = {"type": ref_type, "title": title, "year": year, "journal": journal, "doi": doi, "url": url}
    for name, text in simple.items():
        if text is not None:
            values[name] = catalogue.parse_text(name, text)
    if authors:
        values["authors"] = [parse_person(a) for a in authors]
    if editors:
        values["editors"] = [parse_person(e) for e in editors]
    for item in extra:
        if "=" not in item:
            raise InvalidValue(f"--field {item!r} needs the form KEY=VALUE, e.g. --field volume=12.")
        key, text = item.split("=", 1)
        values[key.strip()] = catalogue.parse_text(key.strip(), text)
    return values


@ref.command("add")
@field_options
@library_option
@json_option
def add(as_json: bool, **options: Any) -> None:
    """Add a reference and print its id."""
    values = collect_fields(**options)
    catalogue.check_new_reference(values, " (--title)")
    with open_library() as library:
        ref_id = library.add_reference(values)
        record = library.refs.get(ref_id)
    if as_json:
        print_json(record.as_dict())
    else:
        click.echo(ref_id)


@ref.command("edit")
@click.argument("ref_id", metavar="ID")
@field_options
@library_option
@json_option
def edit(ref_id: str, as_json: bool, **options: Any) -> None:
    """Change fields of a reference (an empty value clears a field)."""
    values = collect_fields(**options)
    if not values:
        raise InvalidValue("Say what to change, e.g. --title 'New title' or --field volume=12.")
    with open_library() as library:
        changed = library.edit_reference(ref_id, values)
        record = library.refs.get(ref_id)
    if as_json:
        print_json({"changed": changed, "reference": record.as_dict()})
    else:
        click.echo(f"Updated {record.id}." if changed else f"Nothing to change in {record.id}.")


@ref.command("show")
@click.argument("ref_id", metavar="ID")
@library_option
@json_option
def show(ref_id: str, as_json: bool) -> None:
    """Show every field of a reference, its groups and attachments."""
    with open_library() as library:
        record = library.refs.show(ref_id)
    if as_json:
        print_json(record.as_dict())
        return
    click.echo(f"{'ID:':<22}{record.id}")
    for name, value in record.fields.items():  # (in catalogue order)
        click.echo(f"{catalogue.FIELDS[name].label + ':':<22}{_display(name, value)}")
    click.echo(f"{'Added:':<22}{record.added}")
    click.echo(f"{'Modified:':<22}{record.modified}")
    if record.trashed:
        click.echo(f"{'In trash:':<22}yes")
    if record.all_conflicts:
        click.echo(f"{'Sync conflicts in:':<22}{', '.join(record.all_conflicts)}")
    if record.groups:
        click.echo(f"{'Groups:':<22}{', '.join(g.name for g in record.groups)}")
    for item in record.attachments:
        where = item["path"] if item["present"] else "(not on this machine yet)"
        click.echo(f"{'Attachment:':<22}{item['name']}  {item['size']} bytes  {where}")


def _display(name: str, value: Any) -> str:
    if catalogue.FIELDS[name].kind == catalogue.LONG:
        return value.replace("\n", "\n" + " " * 22)
    return catalogue.display_value(name, value)


def print_references(records: Iterable[ReferenceRow], as_json: bool) -> None:
    if as_json:
        stream_json_list(record.as_dict() for record in records)
        return
    for record in records:
        people = record.people
        first = display_person(people[0]).split(",")[0] if people else ""
        if len(people) > 1:
            first += " et al."
        flag = "!" if record.conflicts else " "
        click.echo(
            f"{record.id}{flag} {truncate(record.fields.get('year'), 6):<6} {truncate(first, 22):<22} "
            f"{truncate(record.title, 80)}"
        )


@ref.command("list", short_help="List references (id, year, author, title).")
@click.option("--group", help="Only references in this group (name or id).")
@click.option("--trash", is_flag=True, help="List the trash instead.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many first.")
@click.option(
    "--sort",
    type=click.Choice(list(list_sorts())),
    default="added",
    show_default=True,
    help="Order by this field (ties by id).",
)
@click.option("--reverse", is_flag=True, help="The opposite order (newest, Z to A, latest year first).")
@library_option
@json_option
def list_(
    group: str | None, trash: bool, limit: int | None, offset: int, sort: str, reverse: bool, as_json: bool
) -> None:
    """List references, oldest first unless --sort says otherwise (id, year, first author, title;
    '!' marks a conflict)."""
    with open_library() as library:
        records = library.refs.listing(
            trashed=trash, group=group, limit=limit, offset=offset, sort=sort, descending=reverse
        )
        print_references(records, as_json)


@ref.command("search", short_help="Search the full text; best matches first.")
@click.argument("text", nargs=-1, required=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many results.")
@click.option("--trash", is_flag=True, help="Search the trash instead.")
@library_option
@json_option
def search(text: tuple[str, ...], limit: int | None, trash: bool, as_json: bool) -> None:
    """Search titles, authors, abstracts, keywords and notes; best matches first.

    Every word must match, as a word or the start of one: 'neur plastic' finds
    "Neuronal plasticity".
    """
    with open_library() as library:
        print_references(library.refs.search(" ".join(text), limit=limit, trashed=trash), as_json)


@ref.command("rm", short_help="Move references to the trash.")
@click.argument("ref_ids", metavar="ID...", nargs=-1, required=True)
@library_option
@json_option
def rm(ref_ids: tuple[str, ...], as_json: bool) -> None:
    """Move references to the trash ('p2psync trash restore' brings them back)."""
    with open_library() as library:
        moved = library.trash.put_many(ref_ids)
    if as_json:
        print_json({"trashed": moved})
    else:
        click.echo(f"Moved {len(moved)} reference(s) to the trash.")


@ref.command("fields")
@library_option  # not needed here, but every command accepts it so scripts can always pass it
@json_option
def fields(as_json: bool) -> None:
    """List every field a reference can have, and the reference types."""
    if as_json:
        print_json(
            {
                "fields": [
                    {"name": f.name, "kind": f.kind, "label": f.label, "help": f.help}
                    for f in catalogue.FIELDS.values()
                ],
                "types": catalogue.REFERENCE_TYPES,
            }
        )
        return
    for f in catalogue.FIELDS.values():
        click.echo(f"{f.name:<16}{f.label:<24}{f.help}")
