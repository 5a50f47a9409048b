"""One module per ``steadfast`` verb; see :mod:`steadfast_cli.main`."""
