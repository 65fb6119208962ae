"""`python -m reelflow`: the `reelflow` command."""

from .cli import main

main()
