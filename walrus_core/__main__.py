"""``python -m walrus_core``: the ``walrus`` command line."""

from walrus_core.cli import main

if __name__ == "__main__":
    main()
