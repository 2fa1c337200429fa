import sys

from crossfit_mlops.ops.cli import main

sys.exit(main())
