#!/usr/bin/env bash
# Runs a justfile recipe, installing `just` first when the machine lacks it (fresh machines, CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v just >/dev/null 2>&1; then
  echo "just not found: installing it with cargo (one time)" >&2
  cargo install --locked just
fi
exec just "$@"
