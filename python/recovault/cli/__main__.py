"""`python -m recovault.cli` runs the command line (without _entry's early key derivation)."""
from . import main

main()
