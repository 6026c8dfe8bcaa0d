"""The `chatgw` command line."""
