"""``python -m steadfast_cli`` is the same as the ``steadfast`` command."""

from steadfast_cli.main import main

if __name__ == "__main__":
    main()
