"""`python -m recovault` runs the `recovault` command."""
from ._entry import main

main()
