import sys

from labels.cli import main

sys.exit(main())
