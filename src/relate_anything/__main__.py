"""`python -m relate_anything ...`: the `relate-anything` command, for environments without its script."""

from relate_anything.cli import main

main()
