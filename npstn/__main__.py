import sys

from npstn.cli import main

sys.exit(main())
