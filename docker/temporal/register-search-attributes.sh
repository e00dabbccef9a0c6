#!/bin/sh
# One-shot: register Staccato's custom search attributes (all of type Keyword)
# in the Temporal namespace. Runs in temporalio/admin-tools (has the `temporal`
# CLI); idempotent, so re-running `docker compose up` is harmless.
#
# Environment:
#   TEMPORAL_ADDRESS             frontend address, e.g. temporal:7233 (read by the CLI)
#   TEMPORAL_NAMESPACE           namespace (default: default)
#   STACCATO_SEARCH_ATTRIBUTES   space-separated names to register as Keyword
set -eu

NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
: "${STACCATO_SEARCH_ATTRIBUTES:?set STACCATO_SEARCH_ATTRIBUTES}"

# auto-setup creates the namespace in the background after the frontend is up,
# so wait for the namespace rather than for the port.
tries=0
until temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then
    echo "namespace $NAMESPACE not available at $TEMPORAL_ADDRESS after 120 tries" >&2
    exit 1
  fi
  echo "waiting for namespace $NAMESPACE at $TEMPORAL_ADDRESS ..."
  sleep 2
done

for name in $STACCATO_SEARCH_ATTRIBUTES; do
  if temporal operator search-attribute list --namespace "$NAMESPACE" | grep -qw "$name"; then
    echo "search attribute $name already registered"
  else
    echo "registering search attribute $name (Keyword)"
    temporal operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type Keyword
  fi
done

temporal operator search-attribute list --namespace "$NAMESPACE"
