#!/usr/bin/env python
"""Download (or unpack a local archive of) a Medical Segmentation Decathlon task and verify it.

Examples:
    python data_scripts/prepare_msd.py Task04_Hippocampus --out data/
    python data_scripts/prepare_msd.py Task04_Hippocampus --out data/ --archive ~/Downloads/Task04_Hippocampus.tar
    python data_scripts/prepare_msd.py Task09_Spleen --out data/ --url https://mirror/Task09_Spleen.tar --md5 410d...

Downloads resume where an interrupted one stopped (HTTP range requests on ``<task>.tar.part``).
The archive is checked against ``--md5`` / ``--sha256`` if given, else against the task's known MD5
when it is the official tarball (downloaded from the default URL, or a local ``--archive`` with the
official name ``<task>.tar``); ``--no-verify-md5`` skips the known-MD5 check. Any other local
archive is not checksummed (the script says so). The archive is unpacked and verified in a staging
folder inside ``--out``; only a verified task is moved into ``--out``. Thin wrapper over
:func:`kmunet.data.prepare.prepare_msd`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, prepare the task; returns the exit code (1 on errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="MSD task, e.g. Task04_Hippocampus")
    parser.add_argument("--out", required=True, help="output folder (archive + unpacked task)")
    parser.add_argument("--archive", default=None, help="local archive instead of downloading")
    parser.add_argument("--url", default=None, help="download URL (default: the official MSD tarball)")
    parser.add_argument("--md5", default=None, help="expected MD5 of the archive")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    parser.add_argument("--no-verify-md5", action="store_true",
                        help="do not check the task's known MD5 (an explicit --md5/--sha256 is still checked)")
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    args = parser.parse_args(argv)

    from kmunet.data.prepare import known_msd_md5, prepare_msd

    shown = []  # whether a progress line is open on stderr

    def progress(done: int, total: int | None) -> None:
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"\r{done / 2**20:.1f} MiB{pct}", end="", file=sys.stderr)
        shown[:] = [True]

    try:
        root = prepare_msd(
            args.task, args.out, archive=args.archive, url=args.url, md5=args.md5, sha256=args.sha256,
            timeout=args.timeout, progress=progress, verify_known_md5=not args.no_verify_md5,
        )
    except (ValueError, OSError) as err:
        print(f"{chr(10) if shown else ''}prepare_msd: error: {err}", file=sys.stderr)
        return 1
    print(f"{chr(10) if shown else ''}{root}: verified")
    if args.archive and not (args.md5 or args.sha256):
        if args.no_verify_md5:
            why = "--no-verify-md5 was given"
        elif known_msd_md5(args.task, args.archive) is None:
            why = f"no known MD5 for this file name (the official one is {args.task}.tar)"
        else:
            return 0
        print(f"prepare_msd: note: the local archive {args.archive} was not checksummed: {why}; give --md5 or "
              "--sha256 to check it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
