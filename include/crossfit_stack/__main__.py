import sys

from crossfit_stack.commands import main

sys.exit(main())
