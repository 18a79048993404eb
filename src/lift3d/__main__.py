import sys

from lift3d.cli import main

sys.exit(main())
