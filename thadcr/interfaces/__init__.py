"""What a user calls: the `thadcr` command line, text-to-audio search, and the notebook helpers."""
