#!/bin/sh
# Spilo runbooks take a base backup with `envdir /run/etc/wal-e.d/env /scripts/postgres_backup.sh $PGDATA`.
# The agent finds PGDATA in the Patroni configuration, so the argument is not needed.
exec pgherd-agent backup push --envdir "${PGHERD_ENVDIR:-${WALE_ENV_DIR:-/run/etc/wal-e.d/env}}"
