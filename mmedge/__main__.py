import sys

from mmedge.cli import main

sys.exit(main())
