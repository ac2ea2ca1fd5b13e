"""The bulk paths of receiving: plain new references written without the register machinery,
change sets batched into one transaction with a savepoint each, and search indexing deferred to
a backlog. Each must give exactly what the one-at-a-time path gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.engine import registers
from p2psync.engine.canonical import encode
from p2psync.store import logtext, sync
from p2psync.store.apply import new_ref_row, ref_columns
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal, version_vector
from tests.support import snapshot
from tests.sync_support import founded, joined

DEVICE = "A" * 32
NAME = st.text("ab é", min_size=1, max_size=6).map(lambda t: " ".join(t.split()) or "x")
FIELD_VALUES = st.fixed_dictionaries(
    {"type": st.just("book")},
    optional={
        "title": NAME | st.none(),
        "authors": st.lists(st.fixed_dictionaries({"family": NAME}), min_size=1, max_size=3) | st.none(),
        "editors": st.lists(st.fixed_dictionaries({"literal": NAME}), min_size=1, max_size=2),
        "year": st.sampled_from(["2020", "1999a", None]),
        "keywords": st.lists(NAME, min_size=1, max_size=3, unique=True),
        "trashed": st.sampled_from([True, None]),
        "added": st.integers(0, 2**40),
    },
)


@settings(max_examples=300, derandomize=True)
@given(FIELD_VALUES, st.integers(1, 10**6), st.integers(0, 2**45))
def test_plain_new_reference_row_equals_the_register_path(fields: dict[str, Any], seq: int, ts: int) -> None:
    op = {"op": "ref.put", "ref": "aaaaaaaaaaaaaaaa", "fields": fields, "seen": {}}
    state = {name: registers.write([], (DEVICE, seq), ts, value, []) for name, value in fields.items()}
    values, _data, deleted = ref_columns(state)
    assert not deleted
    assert new_ref_row(DEVICE, seq, ts, op) == ["aaaaaaaaaaaaaaaa", *values, None]
    # With the fields' canonical text given, as a receive does, the row is the same, and the log
    # entry put back together from it is the op's canonical text (store/logtext.py).
    if None not in fields.values():
        text = encode(fields)
        assert new_ref_row(DEVICE, seq, ts, op, text, 7) == ["aaaaaaaaaaaaaaaa", *values[:-2], text, values[-1], 7]
        assert text.decode() == values[-2]  # written as this text (apply.insert_new_refs)
        rebuilt = logtext.HEAD + values[-2] + logtext.TAIL_BEFORE_ID + op["ref"] + logtext.TAIL_AFTER_ID
        assert rebuilt == encode(op).decode()


def test_search_backlog_catches_up_with_the_latest_data(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    first = a.add_reference({"title": "Plasticity of synapses"})
    second = a.add_reference({"title": "Ocean carbon"})
    third = a.add_reference({"title": "Doomed record"})
    seal(a)
    receive(b, changesets_since(a, version_vector(b)))
    assert b.search_backlog() == 3
    # Changes made while still waiting: the index is written from what the reference holds then.
    b.edit_reference(first, {"title": "Plasticity of dendrites"})
    b.trash_reference(third)
    b.empty_trash()
    assert [r["id"] for r in b.search("dendrites")] == [first]  # searching catches up first
    assert b.search_backlog() == 0
    assert list(b.search("synapses")) == []
    assert [r["id"] for r in b.search("ocean")] == [second]
    assert list(b.search("doomed")) == [] and list(b.search("doomed", trashed=True)) == []
    # An edit after catching up replaces the indexed words as usual.
    b.edit_reference(second, {"title": "Ocean heat"})
    assert list(b.search("carbon")) == [] and [r["id"] for r in b.search("heat")] == [second]


def test_received_library_indexes_exactly_like_local_writes(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    for i in range(30):
        a.add_reference({"title": f"Word{i} common", "abstract": f"about thing{i % 7}", "keywords": [f"k{i % 3}"]})
    b = joined(a, tmp_path / "b", "B")
    # snapshot() catches up the backlog and compares the index term by term.
    assert snapshot(b)["refs_fts"] == snapshot(a)["refs_fts"]


def test_a_rejected_change_set_in_a_batch_rolls_back_alone(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    c = joined(a, tmp_path / "c", "C")
    b = joined(a, tmp_path / "b", "B")
    a.add_reference({"title": "from a"})
    c.add_reference({"title": "from c"})
    seal(a)
    seal(c)
    good_a = list(changesets_since(a, version_vector(b)))
    [from_c] = [w for w in changesets_since(c, version_vector(b)) if json.loads(w)["body"]["author"] == c.device_id]
    message = json.loads(from_c)
    message["body"]["entries"][0][2]["fields"]["title"] = "forged"
    forged = json.dumps(message).encode()
    report = receive(b, [*good_a, forged])
    assert [r["reason"] for r in report.rejected] == ["signature"]
    assert {r["title"] for r in b.list_references()} == {"from a"}
    assert sync.recent_problems(b)[0]["reason"] == "signature"
    assert not b.db.conn.in_transaction
    # The real one still arrives later.
    receive(b, changesets_since(c, version_vector(b)))
    assert {r["title"] for r in b.list_references()} == {"from a", "from c"}


def test_commits_in_batches(tmp_path: Path, monkeypatch: Any) -> None:
    a = founded(tmp_path / "a")
    a.add_references([{"title": f"r{i}"} for i in range(2500)])
    b = Library.create(tmp_path / "b", found=False, library_id=a.library_id)
    seal(a)
    monkeypatch.setattr(sync, "COMMIT_ENTRIES", 1000)
    commits = []
    real_commit = sync.commit
    monkeypatch.setattr(sync, "commit", lambda db, deadline: (commits.append(1), real_commit(db, deadline)))
    report = receive(b, changesets_since(a, {}))
    assert report.rejected == [] and b.info()["references"] == 2500
    assert len(commits) >= 2  # the batch commits as it fills, not only at the end


TRICKY = st.sampled_from(['","op":"ref.put","ref":"', '[1,2,{"fields":', '"seen":{}}]', "\\", '"', "é", "x"])
TRICKY_TEXT = st.lists(TRICKY, min_size=1, max_size=4).map("".join)
OTHER_OP = st.sampled_from(
    [
        {"op": "group.put", "group": "gggggggggggggggg", "fields": {"name": "G"}, "seen": {}},
        {"op": "member.add", "group": "gggggggggggggggg", "refs": ["aaaaaaaaaaaaaaaa"]},
    ]
)


@settings(max_examples=200, derandomize=True)
@given(
    st.lists(
        st.one_of(
            OTHER_OP,
            st.builds(
                lambda n, title, people: {
                    "op": "ref.put",
                    "ref": f"{n:016d}".replace("0", "a").replace("1", "b")[:16],
                    "fields": {"title": title, "authors": [{"family": people}], "abstract": title},
                    "seen": {},
                },
                st.integers(0, 10**6),
                TRICKY_TEXT,
                TRICKY_TEXT,
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fields_texts_cut_from_the_body_equal_their_encoding(ops: list[dict[str, Any]]) -> None:
    from p2psync.engine import changesets as cs_engine

    entries = [(seq, 1000 + seq, op) for seq, op in enumerate(ops, start=1)]
    cs = cs_engine.build("L" * 32, DEVICE, None, {}, entries, lambda _: b"\0" * 64)
    texts = logtext.FieldsTexts(cs.body_bytes)
    for seq, ts, op in entries:
        if op["op"] == "ref.put":
            assert texts.find(seq, ts, op["ref"]) == encode(op["fields"])


def test_seal_refuses_a_log_with_a_gap_and_seals_nothing(tmp_path: Path) -> None:
    import pytest

    from p2psync.errors import LibraryCorrupt

    a = founded(tmp_path / "a")
    a.add_references([{"title": f"r{i}"} for i in range(30)])
    before = a.db.execute("SELECT count(*) FROM changesets").fetchone()[0]
    a.db.execute("DELETE FROM changelog WHERE device = ? AND seq = 10", [a.device_id])
    with pytest.raises(LibraryCorrupt, match="missing entries"):
        seal(a)
    assert a.db.execute("SELECT count(*) FROM changesets").fetchone()[0] == before
