#!/bin/sh
# Dovecot's clients find the dict server at base_dir/dict (`proxy::<name>`). dict-server
# listens in the volume shared with its container; Dovecot's own dict listener is switched
# off in dovecot.conf (`unix_listener dict { mode = 0 }`), so this link is all there is.
set -eu
install -d -m 0755 /run/dovecot
ln -sfn /run/dict-rs/dict /run/dovecot/dict
rm -f /run/dovecot/master.pid
exec "$@"
