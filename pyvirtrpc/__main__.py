import sys

from pyvirtrpc.cli import main

sys.exit(main())
