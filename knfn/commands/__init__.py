"""The commands of the ``knfn`` command line by concern; knfn/cli.py assembles them."""
