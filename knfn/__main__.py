"""``python -m knfn``: the command line, for children knfn starts with its own interpreter."""

from knfn.cli import main

if __name__ == "__main__":  # importing the module (as the packaging test does) runs nothing
    main()
