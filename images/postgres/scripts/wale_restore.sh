#!/bin/sh
# Spilo: `envdir DIR bash /scripts/wale_restore.sh --key=value…` (replica creation from a base backup), as
# found in Patroni configurations written by Spilo.
exec pgherd-agent wale-restore --envdir "${PGHERD_ENVDIR:-${WALE_ENV_DIR:-/run/etc/wal-e.d/env}}" "$@"
