import sys

from tokenfactory.bench.cli import main

sys.exit(main())
