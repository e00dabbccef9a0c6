#!/bin/sh
# One-shot, run after the `sftp` service is healthy, in the same
# linuxserver/openssh-server image (it has ssh-keygen and ssh-keyscan).
#
# Prepares the worker's ~/.ssh (the `worker-ssh` volume) so the worker reaches
# sftp://staccato@sftp:2222/... with key authentication and a checked host key:
#   id_ed25519(.pub)  worker client key, generated once
#   known_hosts       the sftp server's host keys, as "[sftp]:2222 ..."
#   config            Host sftp -> User staccato, Port 2222, IdentityFile
# and authorizes the worker key for user `staccato` on the server (its
# authorized_keys lives in the `sftp-home` volume, mounted here at /sftp-home;
# sshd reads it at every login, so no restart is needed).
#
# Environment: SFTP_HOST, SFTP_PORT, SFTP_USER, WORKER_UID, WORKER_GID.
set -eu

SSH_DIR=/worker-ssh
KEY="$SSH_DIR/id_ed25519"
AUTHORIZED_KEYS=/sftp-home/.ssh/authorized_keys

if [ ! -f "$KEY" ]; then
  ssh-keygen -q -t ed25519 -N '' -C "staccato-worker" -f "$KEY"
  echo "generated worker key $KEY"
fi

PUB="$(cat "$KEY.pub")"
if ! grep -qF "$PUB" "$AUTHORIZED_KEYS"; then
  echo "$PUB" >> "$AUTHORIZED_KEYS"
  echo "authorized worker key for $SFTP_USER"
fi

tries=0
until ssh-keyscan -p "$SFTP_PORT" "$SFTP_HOST" > "$SSH_DIR/known_hosts.new" 2>/dev/null \
    && [ -s "$SSH_DIR/known_hosts.new" ]; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "could not scan host keys of $SFTP_HOST:$SFTP_PORT" >&2
    exit 1
  fi
  sleep 1
done
mv "$SSH_DIR/known_hosts.new" "$SSH_DIR/known_hosts"

cat > "$SSH_DIR/config" <<CONFIG
Host $SFTP_HOST
  User $SFTP_USER
  Port $SFTP_PORT
  IdentityFile ~/.ssh/id_ed25519
CONFIG

chown -R "$WORKER_UID:$WORKER_GID" "$SSH_DIR"
chmod 700 "$SSH_DIR"
chmod 600 "$KEY" "$SSH_DIR/config"
chmod 644 "$KEY.pub" "$SSH_DIR/known_hosts"
echo "worker ssh ready:"
cat "$SSH_DIR/known_hosts"
