"""Where a log entry's operation text is kept.

Most of a first sync is ref.put entries that create a reference from nothing. Such an entry's
fields are, byte for byte, the new reference's data (both are canonical JSON), so the store keeps
that text once: in refs.data. The log row then holds op = '' and ref = the reference's id, and
refs.origin points back at the log row. Storing every received reference twice was half of what
a first sync wrote to disk (docs/performance.md).

The entry's text is put back together by SQL when the log is read (OP_TEXT over LOG_ROWS), and is
written back into the log row (restore) before anything changes that reference's row, so the log
never changes meaning. Which entries are kept this way is this machine's own business: the bytes
sent, signed and forwarded are the same either way.
"""

from __future__ import annotations

import sqlite_utils

# canonical({"fields": F, "op": "ref.put", "ref": ID, "seen": {}}) = HEAD + canonical(F) + TAIL(ID):
# keys sort in that order, and ids need no escaping.
HEAD = '{"fields":'
TAIL_BEFORE_ID = ',"op":"ref.put","ref":"'
TAIL_AFTER_ID = '","seen":{}}'

_REBUILT = f"'{HEAD}' || r.data || '{TAIL_BEFORE_ID}' || r.id || '{TAIL_AFTER_ID}'"

# Read the log as `SELECT ..., {OP_TEXT} FROM {LOG_ROWS} WHERE ...` (the log's columns as c.*).
LOG_ROWS = "changelog c LEFT JOIN refs r ON c.op = '' AND r.id = c.ref"
OP_TEXT = f"CASE WHEN c.op = '' THEN {_REBUILT} ELSE c.op END"


def restore(db: sqlite_utils.Database, log_num: int) -> None:
    """Write a log entry kept in its reference's row back into the log row (call it before that
    row changes, inside the same transaction)."""
    db.execute(
        f"UPDATE changelog SET op = (SELECT {_REBUILT} FROM refs r WHERE r.id = changelog.ref), ref = NULL "
        "WHERE num = ? AND op = ''",
        [log_num],
    )
