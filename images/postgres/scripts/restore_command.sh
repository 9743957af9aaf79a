#!/bin/sh
# Spilo: `envdir DIR /scripts/restore_command.sh %f %p`. Zalando's operator writes exactly this into the DCS
# for standby clusters, so it must keep working; the envdir shim says which directory it loaded.
exec pgherd-agent restore-command --envdir "${PGHERD_ENVDIR:-${WALE_ENV_DIR:-/run/etc/wal-e.d/env}}" "$@"
