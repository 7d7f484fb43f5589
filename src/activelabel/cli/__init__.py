"""The `activelabel` command line."""
