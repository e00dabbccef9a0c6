"""A listing page (``list_entries``) whose names would make its result too large for a
Temporal payload is cut after the entry that passes ~512 KiB of JSON; the next page
starts after that entry, so the pages together hold every entry once, in order.

Run in Temporal's ``ActivityEnvironment`` (the real activity, no server needed), with
the budget lowered to 16 KiB so a few hundred names pass it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from staccato.activities import dataset
from staccato.datasets.models import ListInput, ListResult

BUDGET = 16 * 1024
#: names of ~210 bytes: 300 of them are ~90 KB of JSON, over the budget
LONG = "n" * 200
FILES = 300


def test_a_page_of_long_names_is_cut_and_the_next_page_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "PAGE_BYTES_MAX", BUDGET)
    source, destination = tmp_path / "src", tmp_path / "dst"
    for i in range(FILES):
        path = source / f"d{i // 50}" / f"{LONG}{i:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    destination.mkdir()
    environment = ActivityEnvironment()
    names: list[str] = []
    after: str | None = None
    sizes: list[int] = []
    for _ in range(FILES):
        page: ListResult = environment.run(
            dataset.list_entries,
            ListInput(
                source_root=f"file://{source}",
                destination_root=f"file://{destination}",
                after=after,
                limit=10_000,
            ),
        )
        sizes.append(len(page.model_dump_json()))
        names += [entry.name for entry in page.entries]
        if page.next_after is None:
            break
        assert page.last == page.next_after == page.entries[-1].name
        after = page.next_after
    assert max(sizes) < BUDGET + 1024, sizes
    assert len(sizes) >= 4, f"pages of {sizes} bytes"
    expected = sorted(
        (str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()),
        key=lambda name: name.encode(),
    )
    assert names == expected


def test_a_page_leaves_out_the_fields_its_entries_do_not_use(tmp_path: Path) -> None:
    """A small file without a problem is ``{"name", "size"}`` in the page's payload (no
    ``null`` error, source, destination: they were ~half of a page of small files in
    the workflow's history); a large file keeps its URLs, a broken link its reason,
    and a page as an earlier release wrote it (the ``null``s spelled out) reads back
    the same."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    source, destination = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    destination.mkdir()
    (source / "small.bin").write_bytes(b"x" * 10)
    (source / "large.bin").write_bytes(b"y" * 100)
    (source / "broken").symlink_to(source / "missing")
    page: ListResult = ActivityEnvironment().run(
        dataset.list_entries,
        ListInput(
            source_root=f"file://{source}",
            destination_root=f"file://{destination}",
            limit=100,
            small_file_max=50,
        ),
    )
    converter = pydantic_data_converter.payload_converter
    (payload,) = converter.to_payloads([page])
    data = json.loads(payload.data)
    by_name = {entry["name"]: entry for entry in data["entries"]}
    assert by_name["small.bin"] == {"name": "small.bin", "size": 10}
    assert set(by_name["large.bin"]) == {"name", "size", "source", "destination"}
    assert set(by_name["broken"]) == {"name", "size", "error"} and by_name["broken"]["error"]
    (back,) = converter.from_payloads([payload], [ListResult])
    assert back == page
    spelled_out = {
        **data,
        "entries": [
            {"error": None, "source": None, "destination": None, **entry}
            for entry in data["entries"]
        ],
    }
    assert ListResult.model_validate_json(json.dumps(spelled_out)) == page
