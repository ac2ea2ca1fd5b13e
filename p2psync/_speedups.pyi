from typing import Any

def unproven_fields(fields: dict[str, Any]) -> list[str] | None: ...
def configure(
    kinds: dict[str, int],
    types: dict[str, str],
    max_text: int,
    max_long: int,
    max_people: int,
    max_list: int,
    max_int: int,
    /,
) -> None: ...
def proven_ref_puts(entries: list[object], first: int, /) -> int: ...
