#!/usr/bin/python3
# Zalando's operator runs `/usr/bin/python3 /scripts/inplace_upgrade.py <numberOfPods>` on the primary, so this
# name must stay a Python file; the upgrade itself is `pgherd-agent upgrade` (docs/upgrade.md).
import os
import sys

if len(sys.argv) != 2 or not sys.argv[1].isdigit():
    # Spilo's replica form (<version> <primary_ip> <pid>) is not used by pgherd: replicas follow the
    # upgrade through the agent's own watcher. Exit 2 is Spilo's "bad arguments".
    sys.stderr.write("usage: inplace_upgrade.py <number of members>\n")
    sys.exit(2)
os.execvp("pgherd-agent", ["pgherd-agent", "upgrade", "--members", sys.argv[1]])
