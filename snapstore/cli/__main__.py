"""
C{python3 -m snapstore.cli}: the C{snapstore} command.
"""

import sys

from snapstore.cli import main

sys.exit(main())
