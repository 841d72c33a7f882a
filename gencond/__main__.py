import sys

from gencond.cli import main

sys.exit(main())
