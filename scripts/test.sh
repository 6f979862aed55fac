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

find_python() {
    # The interpreter to build the venv with: $PYTHON, else the first Python >= 3.11 on PATH.
    local c
    if [ -n "${PYTHON:-}" ]; then
        command -v "$PYTHON" && return 0
        echo "error: PYTHON=$PYTHON is not an executable" >&2
        return 1
    fi
    for c in python3.11 python3.12 python3.13 python3.14 python3 python; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    echo "error: Python >= 3.11 is needed (python3.11 or python3 on PATH, or PYTHON=...)" >&2
    return 1
}

venv_ok() {
    [ -x "$1/bin/python" ] && "$1/bin/python" -m pip --version >/dev/null 2>&1
}

make_venv() {
    # make_venv PYTHON DIR: a working venv with pip at DIR (kept if it already works).
    local py="$1" dir="$2"
    venv_ok "$dir" && return 0
    rm -rf "$dir"
    echo "==> creating $dir with $("$py" -V 2>&1)"
    if ! "$py" -m venv "$dir" || ! venv_ok "$dir"; then
        # Debian/Ubuntu without python3-venv: fall back to virtualenv from PyPI.
        rm -rf "$dir"
        echo "==> 'python -m venv' failed; using virtualenv instead" >&2
        if ! "$py" -m virtualenv --version >/dev/null 2>&1; then
            "$py" -m pip install --user --quiet virtualenv ||
                "$py" -m pip install --user --quiet --break-system-packages virtualenv
        fi
        "$py" -m virtualenv --quiet "$dir"
    fi
}

PY="$(find_python)"
make_venv "$PY" "$TOOLS"
if ! "$TOOLS/bin/python" -c \
    'import sys, tox; sys.exit(int(tox.__version__.split(".")[0]) != 4)' >/dev/null 2>&1; then
    echo "==> installing tox into $TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check 'tox>=4.4,<5'
fi

echo "==> tox $*"
exec "$TOOLS/bin/python" -m tox "$@"
