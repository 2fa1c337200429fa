import sys

from crossfit_mlops.cli import main

sys.exit(main())
