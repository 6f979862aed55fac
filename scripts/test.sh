#!/usr/bin/env bash
# Run every check of the project through tox: the pytest suite against each backend, the
# backend selection checks, ruff (lint) and
# mypy --strict (type). Needs only Python >= 3.11 with pip; tox is installed into .venv-tools
# on first use. Arguments go to tox unchanged:
#
#   bash scripts/test.sh                      # all envs
#   bash scripts/test.sh -e py311-fd -- -k batch # one env, args after -- go to pytest
#   bash scripts/test.sh -r                   # recreate the envs (after a pyproject.toml change)
#
# Works from any directory and is safe to run again and again.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/.venv-tools"

# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"

PY="$(find_python)"
make_venv "$PY" "$TOOLS"
if ! "$TOOLS/bin/python" -c \
    'import sys, tox; sys.exit(int(tox.__version__.split(".")[0]) != 4)' >/dev/null 2>&1; then
    echo "==> installing tox into $TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check 'tox>=4.4,<5'
fi

echo "==> tox $*"
exec "$TOOLS/bin/python" -m tox "$@"
