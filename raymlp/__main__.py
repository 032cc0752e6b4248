import sys

from raymlp.cli import main

sys.exit(main())
