"""``python -m knfn``: the command line, for children knfn starts with its own interpreter."""

from knfn.cli import main

main()
