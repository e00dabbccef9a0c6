"""A listing page (``list_entries``) whose names would make its result too large for a
Temporal payload is cut after the entry that passes ~512 KiB of JSON; the next page
starts after that entry, so the pages together hold every entry once, in order.

Run in Temporal's ``ActivityEnvironment`` (the real activity, no server needed), with
the budget lowered to 16 KiB so a few hundred names pass it."""

from __future__ import annotations

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
