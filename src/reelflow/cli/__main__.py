"""`python -m reelflow.cli`: the `reelflow` command."""

from . import main

main()
