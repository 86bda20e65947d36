"""Download SoundingEarth, its published weights or a downstream dataset into the layout the readers expect.

    python -m model.fetch --list
    python -m model.fetch soundingearth --out data/
    python -m model.fetch checkpoints --out data/ --only '*18*'
    python -m model.fetch ucmerced --out data/          # -> data/ucmerced/<class>/*.tif
    python -m model.fetch deepglobe --out data/ --from ~/Downloads/archive.zip

Each source is fetched from its public home (see ``--list``; the table with URLs and checksums is in
``model/data/fetch_sources.py``). Downloads show a progress bar, resume where an interrupted run
stopped (HTTP Range onto ``DIR/downloads/<name>/<file>.part``), are checked against the md5 or
sha256 the source publishes (the sha256 is printed either way), then unpacked (zip, tar) and moved
into ``DIR/<name>/``; a rerun of a finished fetch does nothing. Sources without a direct link (AID,
NWPU-RESISC45, DeepGlobe) print the page to visit and where the files go, and exit 2; ``--from``
then places an archive you downloaded yourself.

``--base-url`` (or ``$GEOAUDIO_FETCH_BASE``) replaces the scheme and host of every URL, for a mirror.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from model.core.cli import fail, run_cli
from model.core.download import check_base
from model.data.fetch_sources import SOURCES, Options, describe, fetch

BASE_ENV = "GEOAUDIO_FETCH_BASE"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.fetch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", choices=list(SOURCES), metavar="SOURCE",
                   help=f"what to fetch: {', '.join(SOURCES)}")
    p.add_argument("--out", help="folder to fetch into (the data lands in OUT/SOURCE/)")
    p.add_argument("--list", action="store_true", help="list the sources, what they hold and where they come from")
    p.add_argument("--base-url", default=os.environ.get(BASE_ENV) or None,
                   help=f"replace scheme and host of every URL with this (a mirror; default ${BASE_ENV})")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="fetch only the listed files matching GLOB (repeatable; e.g. --only '*18*')")
    p.add_argument("--from", dest="local", action="append", default=[], metavar="ARCHIVE",
                   help="use this local archive or file instead of downloading (repeatable)")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives in OUT/downloads/")
    p.add_argument("--no-verify", action="store_true",
                   help="do not compare with the published checksums (the sha256 is still printed)")
    p.add_argument("--retries", type=int, default=3, help="resume a dropped connection this many times (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.list:
        for source in SOURCES.values():
            print("\n".join(describe(source)))
        return 0
    if not args.source:
        p.error(f"a SOURCE is required ({', '.join(SOURCES)}), or --list")
    if not args.out:
        p.error("the following arguments are required: --out")
    if args.retries < 0:
        fail(f"--retries must be 0 or more, got {args.retries}")
    opts = Options(base_url=check_base(args.base_url), only=tuple(args.only),
                   local=tuple(Path(f) for f in args.local), keep_archives=args.keep_archives,
                   verify=not args.no_verify, retries=args.retries, progress=not args.quiet)
    fetch(SOURCES[args.source], args.out, opts)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
