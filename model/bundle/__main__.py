"""``python -m model.bundle merge A B --out C``: the bundle's command line."""
import sys

from model.bundle.merge import main

sys.exit(main())
