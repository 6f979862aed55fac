# Shared by scripts/demo.sh and scripts/test.sh (sourced): find a Python >= 3.11 and make a
# working venv with it.

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
    [ -x "$1/bin/python" ] && "$1/bin/python" -m pip --version >/dev/null 2>&1 &&
        "$1/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
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
