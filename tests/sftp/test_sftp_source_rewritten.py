"""An SFTP source rewritten in place within its mtime second (SFTP v3 carries whole
seconds): never a completed transfer with mixed bytes (see tests/test_source_rewritten.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from tests.helpers import MiB
from tests.test_source_rewritten import OPTIONS, copy_while_rewritten


@pytest.mark.slow
async def test_sftp_source_rewritten_in_place_is_never_published_mixed(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    source = data_dir / "rewritten-sftp.bin"
    with open(source, "wb") as f:
        f.truncate(128 * MiB)
    os.chmod(source, 0o644)
    # the transfer's own cap (16 MiB/s: 8 s for the whole file, as the file source's
    # test) keeps the copy running when it is paused, however fast the machine; it was
    # 512 MiB uncapped, which a loaded CI copied (and read a second time) in 14 CPU-s
    await copy_while_rewritten(
        sftp_client,
        sftp_url(source),
        source,
        data_dir / "rewritten-sftp.out",
        keep_mtime=True,
        options=OPTIONS.model_copy(update={"max_rate": 16 * MiB}),
    )
