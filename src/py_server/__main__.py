"""`python -m py_server ...` is the same as `onec-mcp-proxy ...`."""

import sys

from .main import main

sys.exit(main())
