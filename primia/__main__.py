import sys

from primia.cli import main

sys.exit(main())
