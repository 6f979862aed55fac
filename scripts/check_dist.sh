#!/usr/bin/env bash
# Check that every distribution of the repository is fit to publish: build the wheel and the
# sdist of the core (the root), of every plugins/* and of every examples/*, run
# `twine check --strict` on all of them (it fails on a missing or badly rendering long
# description), and check their contents: every wheel has *.dist-info/licenses/LICENSE, every
# sdist has LICENSE, and the core's sdist ships its test suite (tests/conftest.py and every file
# of tests/, helpers/ included) and none of plugins/ or examples/.
#
#   PYTHON=/path/to/python bash scripts/check_dist.sh
#
# The python ($PYTHON, default python3) must have pip, build and twine (tox -e packaging makes
# one). The builds fetch setuptools from the index (build isolation). Everything happens in a
# fresh temporary directory, on a copy of the working tree, so nothing is written into the
# checkout; CHECK_DIST_KEEP=1 keeps that directory (its path is printed). `pip wheel --no-deps`
# builds no dependency (liburing, for walrus-uring, is not built). Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import build, twine, pip' >/dev/null 2>&1; then
    echo "check_dist: $PY cannot import build, twine and pip (pip install build twine)" >&2
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/walrus-check-dist.XXXXXX")"
if [ "${CHECK_DIST_KEEP:-0}" = 1 ]; then
    echo "==> keeping $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi
SRC="$WORK/src"
OUT="$WORK/dist"
mkdir -p "$SRC" "$OUT"

# The working tree (new files included), without git's data, virtualenvs, caches and earlier
# build output (.gitignore's list): builds write build/ and *.egg-info next to the sources.
echo "==> copying the working tree to $SRC"
tar -C "$ROOT" \
    --exclude=./.git --exclude=.tox --exclude='.venv*' --exclude=build --exclude=dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.py[cod]' --exclude='*.so' \
    --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude=./site --exclude=wal_files --exclude='.walrus-bench-*' \
    -cf - . | tar -C "$SRC" -xf -

PROJECTS=(.)
for dir in plugins/*/ examples/*/; do
    if [ -f "$dir/pyproject.toml" ]; then
        PROJECTS+=("${dir%/}")
    fi
done
echo "==> distributions: ${PROJECTS[*]}"

echo "==> wheels (pip wheel --no-deps)"
WHEEL_ARGS=()
for project in "${PROJECTS[@]}"; do
    WHEEL_ARGS+=("$SRC/$project")
done
"$PY" -m pip wheel --no-deps --disable-pip-version-check --quiet -w "$OUT" "${WHEEL_ARGS[@]}"

for project in "${PROJECTS[@]}"; do
    echo "==> sdist of $project"
    "$PY" -m build --sdist --outdir "$OUT" "$SRC/$project" >"$WORK/build.log" 2>&1 || {
        cat "$WORK/build.log" >&2
        echo "check_dist: building the sdist of $project failed" >&2
        exit 1
    }
done

echo "==> twine check --strict"
"$PY" -m twine check --strict "$OUT"/*.whl "$OUT"/*.tar.gz

echo "==> contents"
"$PY" - "$OUT" "$SRC" "${#PROJECTS[@]}" <<'EOF'
import fnmatch
import sys
import tarfile
import zipfile
from pathlib import Path

out, src, expected = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
problems: list[str] = []
wheels = sorted(out.glob("*.whl"))
sdists = sorted(out.glob("*.tar.gz"))
if len(wheels) != expected or len(sdists) != expected:
    problems.append(
        f"expected {expected} wheels and {expected} sdists, got {len(wheels)} and {len(sdists)}"
    )

for wheel in wheels:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if not fnmatch.filter(names, "*.dist-info/licenses/LICENSE"):
        problems.append(f"{wheel.name}: no *.dist-info/licenses/LICENSE")
    if wheel.name.startswith("walrus_core-"):
        stray = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "docs", "scripts")]
        if stray:
            problems.append(f"{wheel.name}: ships files outside walrus_core: {stray[:5]}")

# Every file of the checkout's tests/ (conftest.py, helpers/ and its __init__.py when there is
# one, data files) must be in the core's sdist, so the unpacked sdist runs the suite.
shipped_tests = sorted(
    p.relative_to(src).as_posix()
    for p in (src / "tests").rglob("*")
    if p.is_file() and "__pycache__" not in p.parts
)
for sdist in sdists:
    with tarfile.open(sdist) as archive:
        names = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    if "LICENSE" not in names:
        problems.append(f"{sdist.name}: no LICENSE")
    if any("__pycache__" in n.split("/") or n.endswith((".pyc", ".so")) for n in names):
        problems.append(f"{sdist.name}: ships __pycache__, .pyc or .so files")
    if sdist.name.startswith("walrus_core-"):
        required = ["tests/conftest.py", "tests/helpers/__init__.py", *shipped_tests]
        if not (src / "tests" / "helpers" / "__init__.py").is_file():
            # helpers/ is imported as a namespace package while it has no __init__.py.
            required.remove("tests/helpers/__init__.py")
        if not any(n.startswith("tests/helpers/") and n.endswith(".py") for n in names):
            problems.append(f"{sdist.name}: no tests/helpers/*.py")
        missing = [n for n in dict.fromkeys(required) if n not in names]
        if missing:
            problems.append(f"{sdist.name}: missing test files: {missing}")
        stray = sorted({n.split("/")[0] for n in names} & {"plugins", "examples"})
        if stray:
            problems.append(f"{sdist.name}: ships {stray} (separate distributions)")

for name in [*wheels, *sdists]:
    print(f"    {name.name}")
if problems:
    print("check_dist: FAILED", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    sys.exit(1)
print(f"check_dist: OK ({len(wheels)} wheels, {len(sdists)} sdists)")
EOF
