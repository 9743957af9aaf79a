#!/bin/sh
# Spilo's replica creation method name, as found in Patroni configurations written by Spilo.
exec pgherd-agent basebackup "$@"
