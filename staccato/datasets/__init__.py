"""Datasets: copying a directory or a prefix (``cp -r``), page by page.

:mod:`staccato.datasets.models` (what crosses Temporal), :mod:`staccato.datasets.workflow`
(``DatasetWorkflow``), :mod:`staccato.datasets.names` (relative names -> destination
URLs). The activities live in :mod:`staccato.activities.dataset`.
"""
