"""When are two references plainly the same? Used by import, and by the first sync of two
non-empty libraries, so that a reference is never silently doubled.

- "doi:<doi, lowercased>" when there is a DOI;
- "tyf:<title>|<year digits>|<first author>" when there is a title and a year or an author.
  The first author is the family name or institution of the first author (or, for a work without
  authors, of the first editor); all three parts are normalised (see normalise);
Two references that share any key are duplicates. Besides, a record identical to a reference in
every field is always a duplicate (identical_key), even one too sparse for the keys above, so
importing the same file twice never doubles anything.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

from p2psync.model.fields import FIELDS


def normalise(text: str) -> str:
    """Compare-friendly text: NFKD, accents stripped, casefolded, non-alphanumerics to one space."""
    if text.isascii():  # the same result, without the per-character work (most titles and names)
        folded = text.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        folded = stripped.casefold()
    return " ".join(re.sub(r"[\W_]+", " ", folded).split())


def year_of(fields: dict[str, Any]) -> str | None:
    """The year's digits from `year` or else `date` ('2021a' -> '2021')."""
    for name in ("year", "date"):
        value = fields.get(name)
        if isinstance(value, str):
            match = re.match(r"\d{1,4}", value)
            if match:
                return match.group(0)
    return None


def duplicate_keys(fields: dict[str, Any]) -> list[str]:
    """Keys by which two references are plainly the same: equal keys mean a duplicate."""
    keys: list[str] = []
    doi = fields.get("doi")
    if isinstance(doi, str) and doi.strip():
        keys.append("doi:" + doi.strip().lower())
    title = normalise(fields["title"]) if isinstance(fields.get("title"), str) else ""
    year = year_of(fields) or ""
    people = fields.get("authors") or fields.get("editors") or []
    first = ""
    if people and isinstance(people[0], dict):
        first = normalise(people[0].get("family") or people[0].get("literal") or "")
    if title and (year or first):
        keys.append(f"tyf:{title}|{year}|{first}")
    return keys


def identical_key(fields: dict[str, Any]) -> str:
    """A key equal for references whose catalogue fields are all equal."""
    content = {k: v for k, v in fields.items() if k in FIELDS and v not in (None, "", [])}
    return "same:" + hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]
