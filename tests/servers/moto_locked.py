"""``moto_server`` with one race of moto 5.2.6 closed: run as ``python moto_locked.py
-H HOST -p PORT`` (the arguments of ``moto_server``).

moto computes an object's or part's ETag lazily (``FakeKey.etag``), without the key's
lock, by seeking the key's one buffer to 0 and reading it to the end. A ListParts that
computes it while the UploadPart's own answer (or another ListParts) computes it too
reads from the other's position and keeps the MD5 of none, or of twice the part's
bytes, which every later ListParts lists. Staccato's publish then rightly refuses the
upload ("a part was replaced under the upload") and copies the object again in full:
a tuned 1 GiB copy to ``staccato try-endpoints``' moto did so once in 6 (tester74; each
of its 64 parts PUT once). Here the ETag is computed under the key's lock, as moto's
own ``FakeKey.value`` reads the buffer. Real S3 computes a part's ETag as it stores it.
"""

from __future__ import annotations

import sys
from typing import Any


def _lock_the_etag() -> None:
    from moto.s3.models import FakeKey

    unlocked = FakeKey.etag.fget
    assert unlocked is not None

    def etag(self: Any) -> str:
        with self.lock:  # the lock FakeKey.value holds while it reads the buffer
            return unlocked(self)

    FakeKey.etag = property(etag)  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    _lock_the_etag()
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
