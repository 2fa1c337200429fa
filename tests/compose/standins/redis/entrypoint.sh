#!/bin/sh
# As the official image: the server runs as user redis in /data, protected mode off (the compose
# network is the only way in; nothing publishes its port).
set -eu
if [ "${1:-}" = "redis-server" ]; then
  chown -R redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$@" --protected-mode no
fi
exec "$@"
