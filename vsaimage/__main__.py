import sys

from vsaimage.cli import main

sys.exit(main())
