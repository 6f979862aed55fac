#!/usr/bin/env bash
# Run the demo producer/consumer on the default embedded setup (FD backend).
# Needs only Python >= 3.11 with pip: creates .venv (once), installs walrus-core and walrus-fd
# from this checkout into it (editable, in the mode type checkers follow; again only when a
# pyproject.toml changed), then runs
# `python -m walrus_core.demo`. Arguments go to the demo. Works from any directory and is safe
# to run again and again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"

# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"

PY="$(find_python)"
make_venv "$PY" "$VENV"

# Reinstall only when what pip would install changed (or the packages went missing).
STAMP="$VENV/.walrus-install-stamp"
WANT="$(cat pyproject.toml plugins/walrus_fd/pyproject.toml | cksum)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] ||
    ! "$VENV/bin/python" -c 'import walrus_core, walrus_fd' >/dev/null 2>&1; then
    echo "==> installing walrus-core and walrus-fd (editable) into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e . -e plugins/walrus_fd --config-settings editable_mode=compat
    printf '%s\n' "$WANT" >"$STAMP"
fi

exec "$VENV/bin/python" -m walrus_core.demo "$@"
