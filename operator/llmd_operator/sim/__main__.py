"""`python -m llmd_operator.sim ...` runs the `simulate` command."""

from .command import main

main()
