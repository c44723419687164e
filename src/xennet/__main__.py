"""``python3 -m xennet``: the command line (for hosts where the ``xennet`` script is not installed)."""

from .cli.main import main

main(prog_name="xennet")
