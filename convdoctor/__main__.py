"""``python -m convdoctor``."""

from .cli import main

main()
