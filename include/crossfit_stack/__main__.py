import sys

from crossfit_stack.cli import main

sys.exit(main())
