"""``python -m thunder.cli``."""

from thunder.cli import main

main()
