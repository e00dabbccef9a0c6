"""The ``sftp`` endpoint (``sftp://[user@]host[:port]/path``), one module per concern:

========================  ==============================================================
``driver``                :class:`SFTPDriver`: stat, sessions, publish, abort
``streams``               :class:`SFTPReader`, :class:`SFTPChunkWriter`
``remote_hash``           SHA-256 of temp-file ranges computed by the server (exec channel)
``journal``               the write session's journal and the proof of publish
``files``                 small file operations and SFTP errors -> Staccato errors
``pool``                  this process's connections (:data:`POOL`) and :func:`run`
``connection``            opening one connection; failures on an open one
``slots``                 the per-host connection cap across processes (``flock(2)``)
``pipeline``              pipelined reads and writes, stall handling
``protocol``              SFTP v3 over paramiko; the only user of paramiko's private names
``hostkeys``              known_hosts checks
``auth``                  public-key authentication, never a prompt
``ssh``                   settings and ssh config -> :class:`SSHHost`; socket; redaction
========================  ==============================================================

Each module imports only modules below it in this table (``protocol`` and ``ssh`` none
of the package). Tests pin paramiko's private names ``protocol`` relies on:
``tests/sftp/test_paramiko_surface.py``.
``docs/sftp.md`` is the user-facing description.
"""

from staccato.endpoints.sftp.connection import Connection, ConnectionLost, ShellPrints, guarded
from staccato.endpoints.sftp.driver import MEASURE_LIMIT_BYTES, SFTPDriver
from staccato.endpoints.sftp.journal import JOURNAL_RECORD_BYTES
from staccato.endpoints.sftp.pipeline import ReadPipeline, SourceEnded, SourceLonger
from staccato.endpoints.sftp.pool import POOL, Pool, run
from staccato.endpoints.sftp.protocol import StaccatoSFTP, StatusError
from staccato.endpoints.sftp.slots import Slot, acquire_slot, lock_dir
from staccato.endpoints.sftp.ssh import SSHHost, describe, resolve
from staccato.endpoints.sftp.streams import READ_CALL_BYTES, SFTPChunkWriter, SFTPReader

__all__ = [
    "JOURNAL_RECORD_BYTES",
    "MEASURE_LIMIT_BYTES",
    "POOL",
    "READ_CALL_BYTES",
    "Connection",
    "ConnectionLost",
    "Pool",
    "ReadPipeline",
    "SFTPChunkWriter",
    "SFTPDriver",
    "SFTPReader",
    "ShellPrints",
    "Slot",
    "SourceEnded",
    "SourceLonger",
    "StaccatoSFTP",
    "StatusError",
    "SSHHost",
    "acquire_slot",
    "describe",
    "guarded",
    "lock_dir",
    "resolve",
    "run",
]
