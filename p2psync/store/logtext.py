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

from p2psync.store.db import Database

# canonical({"fields": F, "op": "ref.put", "ref": ID, "seen": {}}) = HEAD + canonical(F) + TAIL(ID):
# keys sort in that order, and ids need no escaping.
HEAD = '{"fields":'
TAIL_BEFORE_ID = ',"op":"ref.put","ref":"'
TAIL_AFTER_ID = '","seen":{}}'

_REBUILT = f"'{HEAD}' || r.data || '{TAIL_BEFORE_ID}' || r.id || '{TAIL_AFTER_ID}'"

# Read the log as `SELECT ..., {OP_TEXT} FROM {LOG_ROWS} WHERE ...` (the log's columns as c.*).
LOG_ROWS = "changelog c LEFT JOIN refs r ON c.op = '' AND r.id = c.ref"
OP_TEXT = f"CASE WHEN c.op = '' THEN {_REBUILT} ELSE c.op END"


def restore(db: Database, log_num: int) -> None:
    """Write a log entry kept in its reference's row back into the log row (call it before that
    row changes, inside the same transaction)."""
    db.execute(
        f"UPDATE changelog SET op = (SELECT {_REBUILT} FROM refs r WHERE r.id = changelog.ref), ref = NULL "
        "WHERE num = ? AND op = ''",
        [log_num],
    )


_TAIL_BEFORE_ID = TAIL_BEFORE_ID.encode()
_TAIL_AFTER_ID = TAIL_AFTER_ID.encode() + b"]"


class FieldsTexts:
    """canonical(op["fields"]) of a plain new reference's entry, cut out of the change set's
    canonical body instead of encoding the fields again (a fifth of a megabyte per 100 entries).

    In the body, that entry is exactly [seq,ts,{"fields":F,"op":"ref.put","ref":"ID","seen":{}}]
    (keys in sorted order), entries in order. Neither marker can occur inside F: quotes inside
    strings are escaped, and the checked fields hold no object with an "op" key and no list of
    numbers. The search only moves forward, so a change set is read once."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def find(self, seq: int, ts: int, ref: str) -> bytes:
        start, end = self.span(seq, ts, ref)
        return self.body[start:end]

    def span(self, seq: int, ts: int, ref: str) -> tuple[int, int]:
        """Where the text is in the body: body[start:end]."""
        head = b'[%d,%d,{"fields":' % (seq, ts)
        start = self.body.index(head, self.at) + len(head)
        end = self.body.index(_TAIL_BEFORE_ID + ref.encode() + _TAIL_AFTER_ID, start)
        self.at = end
        return start, end
