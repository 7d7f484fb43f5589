"""`python -m activelabel` runs the command line."""

from activelabel.cli.main import main

main()
