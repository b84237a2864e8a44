#!/bin/sh
# Runs the command (redis-server and its options) as user redis. The socket directory
# /run/redis may be a host directory (the tests' DICT_TEST_REDIS_SOCKET): it is made
# writable for that user first.
set -eu
install -d /run/redis
chmod 1777 /run/redis
cd /var/lib/redis
exec setpriv --reuid=redis --regid=redis --init-groups "$@"
