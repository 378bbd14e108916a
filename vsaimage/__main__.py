import sys

from vsaimage.cli.main import main

sys.exit(main())
