#!/bin/sh
# Spilo's Patroni callback name (`/scripts/on_role_change.sh HUMAN_ROLE CMD… ACTION ROLE SCOPE`).
exec pgherd-agent on-role-change "$@"
