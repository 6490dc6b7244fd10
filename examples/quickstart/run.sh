#!/usr/bin/env bash
# The CPU sweep of the embedded default, exactly scripts/example.sh: set up, build,
# prepare GCIDE, plan configs/tiny-cpu.toml, train, fit, recommend, report (out/).
set -euo pipefail
exec "$(dirname "$0")/../../scripts/example.sh" "$@"
