import sys

from .cli import main

# The guard matters: feature extraction starts worker processes with `spawn`,
# which re-imports this module.
if __name__ == "__main__":
    sys.exit(main())
