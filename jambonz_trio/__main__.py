"""``python -m jambonz_trio`` (also the ``jambonz-trio`` console script)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
