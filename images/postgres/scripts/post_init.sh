#!/bin/sh
# Spilo's Patroni post_init name (`/scripts/post_init.sh HUMAN_ROLE URL`).
exec pgherd-agent post-init "$@"
