"""`python -m deploy.cli`: the same command line as the `sidstream` script."""
import sys

from deploy.cli import main

sys.exit(main())
