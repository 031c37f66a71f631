"""`python -m specdifftree.cli ARGS` runs `sdt ARGS` (child processes of `sdt bench speed` start searches so)."""

from specdifftree.cli import main

main()
