"""Import and export of reference files: RIS, BibTeX/BibLaTeX, EndNote XML and CSL-JSON.

Pure functions over text: no database, no CLI. `read(text, fmt)` gives a ReadResult whose
records' fields go straight into Library.add_references; `write(records, fmt)` takes what
Library.list_references yields. See docs/formats.md for what maps where and what is lost.
"""

from p2psync.formats.common import (
    FormatError,
    InvalidRecord,
    ParsedRecord,
    ReadResult,
    RecordStream,
    duplicate_keys,
    normalise,
)
from p2psync.formats.detect import (
    DEFAULT_EXTENSIONS,
    FORMATS,
    LABELS,
    format_name,
    guess_format,
    read,
    read_file,
    write,
    write_chunks,
)
from p2psync.formats.reading import read_path

__all__ = [
    "DEFAULT_EXTENSIONS",
    "FORMATS",
    "LABELS",
    "FormatError",
    "InvalidRecord",
    "ParsedRecord",
    "ReadResult",
    "RecordStream",
    "duplicate_keys",
    "format_name",
    "guess_format",
    "normalise",
    "read",
    "read_file",
    "read_path",
    "write",
    "write_chunks",
]
