#!/bin/sh
# The benchmark in one command: sets up bench/node_modules and the venvs, then runs everything.
exec python3 "$(dirname "$0")/run.py" "$@"
