#!/usr/bin/env bash
# Run every check of the project through tox: the pytest suite against each backend, the
# backend selection checks, the README's and the docs' examples, ruff (lint), mypy --strict
# (type), the docs build and the distributions. Needs only Python >= 3.11 with pip; tox is
# installed into .venv-tools on first use.
#
# With no arguments every env runs, $WALRUS_TOX_PARALLEL at a time (default: the number of
# CPUs, at most 4; 1 runs them one after another, with their output as it comes). In parallel,
# tox prints each env's output when it ends. With arguments, they go to tox unchanged:
#
#   bash scripts/test.sh                          # all envs, in parallel
#   bash scripts/test.sh -e py311-fd -- -k batch  # one env, args after -- go to pytest
#   bash scripts/test.sh -r                       # recreate the envs (after a pyproject.toml change)
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

TOX=("$TOOLS/bin/python" -m tox)
if [ "$#" -gt 0 ]; then
    echo "==> tox $*"
    exec "${TOX[@]}" "$@"
fi

# tox reads TOX_PARALLEL itself (as --parallel for every command): keep it out of its way.
unset TOX_PARALLEL
CPUS="$("$TOOLS/bin/python" -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)')"
PARALLEL="${WALRUS_TOX_PARALLEL:-$((CPUS < 4 ? CPUS : 4))}"
if ! [[ "$PARALLEL" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: WALRUS_TOX_PARALLEL must be a whole number >= 1, got '$PARALLEL'" >&2
    exit 2
fi
if [ "$PARALLEL" -eq 1 ]; then
    echo "==> tox (every env, one after another)"
    exec "${TOX[@]}"
fi
# One env first installs what the others share: liburing's wheel is built once (pip's cache
# serves it to every later env). If it fails, the parallel run reports that env's failure.
echo "==> tox -e py311-uring --notest (the shared liburing build, once)"
"${TOX[@]}" run -e py311-uring --notest -q || echo "==> (py311-uring could not be prepared; going on)"
echo "==> tox run-parallel --parallel $PARALLEL (every env)"
exec "${TOX[@]}" run-parallel --parallel "$PARALLEL" --parallel-no-spinner
