"""``python -m model.bundle merge A B --out C``: the bundle's command line."""
import sys

from model.bundle.merge import main
from model.core.cli import run_cli

sys.exit(run_cli(main))
