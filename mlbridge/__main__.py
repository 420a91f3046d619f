"""`python -m mlbridge` runs the CLI."""

from .cli import main

main()
