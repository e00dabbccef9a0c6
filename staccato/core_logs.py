"""Where the Temporal SDK core's own log lines go: Python logging, not the console.

The SDK's Rust core writes its warnings (``temporalio_client::retry: gRPC call
describe_workflow_execution retried 8 times`` while a server is away) to the console,
ANSI coloured, by default: under a CLI command's own one-line message. Every Temporal
client Staccato makes runs on a runtime from :func:`new_runtime`, which forwards them
to :data:`CORE_LOGGER` instead: shown where the process configures logging (a worker:
``staccato up``, ``staccato worker``, an application that set up logging) and nowhere
else.
"""

from __future__ import annotations

import logging

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

#: where the Temporal SDK core's own log lines (Rust: ``temporalio_client::retry``
#: warnings while a server is away) go: Python logging, shown where the process
#: configures logging (a worker: ``staccato up``, ``staccato worker``) and nowhere else
#: (the NullHandler keeps Python's last-resort handler from printing them on a CLI
#: command's terminal, where the command says what failed in its own line)
CORE_LOGGER = logging.getLogger("staccato.temporal_core")
CORE_LOGGER.addHandler(logging.NullHandler())


def new_runtime() -> Runtime:
    """A Temporal runtime (its own Tokio threads) whose core logs (WARN and up) go
    to :data:`CORE_LOGGER` instead of the console, where the SDK writes them by
    default (ANSI coloured, under a CLI command's own message)."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=CORE_LOGGER),
            )
        )
    )
