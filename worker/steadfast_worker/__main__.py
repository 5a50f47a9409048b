"""``python -m steadfast_worker`` is the same as the ``steadfast`` command."""

from steadfast_worker.cli import main

if __name__ == "__main__":
    main()
