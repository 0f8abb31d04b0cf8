import sys

from smartport.cli import main

sys.exit(main())
