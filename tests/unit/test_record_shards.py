"""Tables of JSON shards: a table that changes a few records writes a shard of those records only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.store.record_shards import SHARD_LIMIT, MalformedRecords, read_keyed, read_listed, write_keyed, write_listed


def folder(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def shard_bytes(version: Path, table: dict[str, list[str]]) -> list[int]:
    return [(version / name).stat().st_size for name in table["shards"]]


def test_a_changed_record_adds_one_shard_of_it_and_links_the_rest(tmp_path: Path) -> None:
    records = {f"p{i}": {"product": f"p{i}", "name": f"Part {i}" * 20} for i in range(200)}
    first, second = folder(tmp_path, "v1"), folder(tmp_path, "v2")
    written = write_keyed(first, "catalog", records, None, None)
    assert len(written.shards) == 1
    grown = {**records, "p7": {"product": "p7", "name": "renamed"}, "new": {"product": "new", "name": "New"}}
    added = write_keyed(second, "catalog", grown, written, first)
    assert added.shards[0] == written.shards[0]
    assert (second / added.shards[0]).samefile(first / written.shards[0])  # linked, not written again
    (base, delta) = shard_bytes(second, added.record())
    assert delta < base / 50  # two records' bytes, not the table's
    read = read_keyed(added.record(), lambda name: second / name)
    assert read.content == grown  # the later shard's record of p7 wins
    assert write_keyed(folder(tmp_path, "v3"), "catalog", grown, read, second).shards == added.shards  # unchanged


def test_a_removed_key_or_the_shard_limit_writes_the_table_again_as_one_shard(tmp_path: Path) -> None:
    records = {"a": 1, "b": 2}
    table = write_keyed(folder(tmp_path, "v0"), "t", records, None, None)
    source = tmp_path / "v0"
    for step in range(1, SHARD_LIMIT):
        target = folder(tmp_path, f"v{step}")
        records = {**records, f"k{step}": step}
        table = write_keyed(target, "t", records, table, source)
        source = target
    assert len(table.shards) == SHARD_LIMIT
    past = write_keyed(folder(tmp_path, "past"), "t", {**records, "z": 0}, table, source)
    assert len(past.shards) == 1 and past.content == {**records, "z": 0}
    fewer = write_keyed(folder(tmp_path, "fewer"), "t", {"a": 1}, past, tmp_path / "past")
    assert len(fewer.shards) == 1
    assert read_keyed(fewer.record(), lambda name: tmp_path / "fewer" / name).content == {"a": 1}


def test_a_listed_table_appends_rows_and_is_rewritten_when_its_start_changes(tmp_path: Path) -> None:
    columns = ("products", "categories")
    start = {"products": ["a", "b"], "categories": ["x", "y"]}
    first = write_listed(folder(tmp_path, "v1"), "labels", start, None, None)
    grown = {"products": ["a", "b", "c"], "categories": ["x", "y", "x"]}
    appended = write_listed(folder(tmp_path, "v2"), "labels", grown, first, tmp_path / "v1")
    assert len(appended.shards) == 2
    assert json.loads((tmp_path / "v2" / appended.shards[1]).read_text()) == {"products": ["c"], "categories": ["x"]}
    assert read_listed(appended.record(), lambda name: tmp_path / "v2" / name, columns).content == grown
    reordered = {"products": ["b", "a", "c"], "categories": ["y", "x", "x"]}
    again = write_listed(folder(tmp_path, "v3"), "labels", reordered, appended, tmp_path / "v2")
    assert len(again.shards) == 1
    assert read_listed(again.record(), lambda name: tmp_path / "v3" / name, columns).content == reordered


@pytest.mark.parametrize(
    ("record", "shard", "message"),
    [
        ({"shards": []}, None, "lists no shard file names"),
        ({"shards": ["../elsewhere.json"]}, None, "lists no shard file names"),
        ({"shards": ["t.json"]}, b"[1, 2]", "is not a JSON object"),
        ({"shards": ["t.json"]}, b"{broken", "is not readable JSON"),
        ({"shards": ["t.json"]}, b'{"records": [1]}', "not a shard of keyed records"),
    ],
)
def test_a_malformed_keyed_table_names_its_file(
    tmp_path: Path, record: dict[str, list[str]], shard: bytes | None, message: str
) -> None:
    if shard is not None:
        (tmp_path / "t.json").write_bytes(shard)
    with pytest.raises(MalformedRecords, match=message) as caught:
        read_keyed(record, lambda name: tmp_path / name)
    if shard is not None:
        assert str(tmp_path / "t.json") in str(caught.value)


def test_listed_columns_of_unequal_length_are_refused(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('{"products": ["a", "b"], "categories": ["x"]}')
    with pytest.raises(MalformedRecords, match="not a shard of the columns products, categories"):
        read_listed({"shards": ["t.json"]}, lambda name: tmp_path / name, ("products", "categories"))
