"""``python -m staccato.cli``: the ``staccato`` command."""

from staccato.cli import main

main()
