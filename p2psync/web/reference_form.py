"""A reference as its web page shows it and as its edit form reads it.

The form has one control per catalogue field (model/fields.py), named `f.<field>`; people and
keywords are one per line. Each value is read by the catalogue's own parse function (the one
`ref add --field` uses), so the page and the command line accept and refuse exactly the same
values; a refusal is kept beside its field and nothing is saved. An edit writes only the fields
the user changed: each control carries the text it was shown with (`was.<field>`), so a field
left alone is not overwritten with what the page showed (a sync may have changed it meanwhile),
and a field in conflict is not resolved by saving another one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from p2psync.errors import InvalidInput, InvalidValue
from p2psync.model import fields as catalogue
from p2psync.model.people import display_person
from p2psync.model.sizes import human_size  # (the one formatter; web pages name it from here)
from p2psync.store.library.records import ReferenceDetail
from p2psync.web.auth import CSRF_FIELD

VALUE, ORIGINAL = "f.", "was."
LINES = "\n"  # people and keywords: one per line in the form
MULTI_LINE = frozenset({catalogue.PEOPLE, catalogue.LIST, catalogue.LONG})
TYPES = tuple(catalogue.REFERENCE_TYPES.items())


@dataclass(frozen=True)
class ShownField:
    """One field of a reference's page: its label and its value as text, or as items (people,
    keywords), or as a link (DOI, URL)."""

    name: str
    label: str
    text: str
    items: tuple[str, ...] = ()
    link: str = ""
    long: bool = False


def shown_fields(record: ReferenceDetail) -> list[ShownField]:
    out = []
    for name, value in record.fields.items():  # in catalogue order
        spec = catalogue.FIELDS[name]
        items: tuple[str, ...] = ()
        if spec.kind == catalogue.PEOPLE:
            items = tuple(display_person(p) for p in value)
        elif spec.kind == catalogue.LIST:
            items = tuple(value)
        text = catalogue.display_value(name, value)
        out.append(ShownField(name, spec.label, text, items, _link(name, text), spec.kind == catalogue.LONG))
    return out


def _link(name: str, text: str) -> str:
    if name == "doi":
        return "https://doi.org/" + quote(text, safe="/:;()._-")
    if name == "url" and text.lower().startswith(("https://", "http://")):
        return text  # never a javascript: or data: link
    return ""


@dataclass(frozen=True)
class ShownAttachment:
    """One attachment of a reference's page (from Attachments.listing's item)."""

    name: str
    size: int
    present: bool  # False: "not on this machine yet"
    conflict: bool
    problem: str
    href: str

    @property
    def is_pdf(self) -> bool:
        return self.name.lower().endswith(".pdf")

    @property
    def shown_size(self) -> str:
        return human_size(self.size)


def shown_attachments(record: ReferenceDetail) -> list[ShownAttachment]:
    return [
        ShownAttachment(
            a["name"],
            a["size"],
            a["present"],
            a["conflict"],
            a.get("problem", ""),
            attachment_href(record.id, a["name"]),
        )
        for a in record.attachments
    ]


def when(iso: str | None) -> str:
    """'2026-12-07T05:09:25.194Z' as '2026-12-07 05:09 UTC' (the page's <time> keeps the whole)."""
    return f"{iso[:10]} {iso[11:16]} UTC" if iso else ""


def attachment_href(ref_id: str, name: str) -> str:
    return f"/ref/{ref_id}/file/{quote(name, safe='')}"


@dataclass(frozen=True)
class Control:
    """One control of the edit form: what it shows, what it was shown with, its message."""

    name: str
    label: str
    kind: str
    help: str
    value: str
    original: str
    error: str = ""

    @property
    def id(self) -> str:
        return "field-" + self.name

    @property
    def multi_line(self) -> bool:
        return self.kind in MULTI_LINE


def edit_text(name: str, value: Any) -> str:
    """A stored value as its control shows it (the inverse of how the form is read)."""
    return catalogue.format_value(name, value, separator=LINES)


def controls_for(values: Mapping[str, Any]) -> list[Control]:
    """The form for a reference holding `values` (empty for a new one)."""
    out = []
    for spec in catalogue.FIELDS.values():
        value = values.get(spec.name)
        if spec.name == "type" and value is None:
            value = catalogue.DEFAULT_TYPE
        text = edit_text(spec.name, value)
        out.append(Control(spec.name, spec.label, spec.kind, spec.help, text, text))
    return out


@dataclass
class ReadForm:
    """What a posted form says: the controls to show again, and the values to write."""

    controls: list[Control]
    values: dict[str, Any] = field(default_factory=dict)  # field -> parsed value (None clears)
    errors: int = 0

    def error(self, name: str, message: str) -> None:
        self.controls = [
            Control(c.name, c.label, c.kind, c.help, c.value, c.original, message) if c.name == name else c
            for c in self.controls
        ]
        self.errors += 1


def read_form(posted: Iterable[tuple[str, Any]], new: bool) -> ReadForm:
    """Read a posted reference form: the (name, value) pairs it sent, in order, repeats included.
    A forged or repeated name is refused whole (InvalidInput, one sentence); a bad value becomes
    a message beside its control."""
    sent: dict[str, str] = {}
    was: dict[str, str] = {}
    for key, text in posted:
        if key == CSRF_FIELD:
            continue
        prefix = VALUE if key.startswith(VALUE) else ORIGINAL if key.startswith(ORIGINAL) else None
        if prefix is None:
            raise InvalidInput(f"The form sent {key[:60]!r}, which is not a field of a reference.")
        name = key[len(prefix) :]
        catalogue.field(name)  # UnknownField, naming the known ones
        target = sent if prefix == VALUE else was
        if name in target:
            raise InvalidInput(f"The form sent the field {name!r} twice.")
        if not isinstance(text, str):
            raise InvalidInput(f"The form sent a file as the field {name!r}.")
        target[name] = text.replace("\r\n", "\n")
    form = ReadForm(
        [
            Control(spec.name, spec.label, spec.kind, spec.help, sent.get(spec.name, ""), was.get(spec.name, ""))
            for spec in catalogue.FIELDS.values()
        ]
    )
    for name, text in sent.items():
        if not new and text == was.get(name, ""):
            continue  # left as it was shown: not written
        try:
            form.values[name] = catalogue.parse_text(name, text, separator=LINES)
        except InvalidValue as exc:
            form.error(name, exc.message)
    if new and not form.errors:
        form.values = {k: v for k, v in form.values.items() if v is not None}
        try:
            catalogue.check_new_reference(form.values)
        except InvalidValue as exc:
            form.error("title", exc.message)
    return form
