"""Time Uploader.url_for for a ~10 MB PNG against moto's S3 server on loopback.

    python benchmarks/uploads.py [--runs 3] [--megabytes 10]

Each run uploads a new noise PNG (noise does not compress, so the file is as large as its
pixels), so every run is a real upload: sha256 + HEAD + PUT + signing. Also timed: the same
bytes again (found, not uploaded). Prints medians; the server runs in this process.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from PIL import Image  # noqa: E402
from s3_server import running_s3_server  # noqa: E402

from nanobanana_magic.runtime.uploads import Uploader  # noqa: E402


def noise_png(megabytes: float) -> bytes:
    side = int((megabytes * 1e6 / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--megabytes", type=float, default=10.0)
    args = parser.parse_args(argv)
    with running_s3_server() as server:
        bucket = server.new_bucket()
        uploader = Uploader(f"s3://{bucket}/bench", server.options())
        uploader.url_for(b"warm-up: client creation is not what is measured", ".txt")
        uploads, skips, sizes = [], [], []
        for _ in range(args.runs):
            data = noise_png(args.megabytes)
            sizes.append(len(data))
            start = time.perf_counter()
            uploader.url_for(data, ".png")
            uploads.append(time.perf_counter() - start)
            start = time.perf_counter()
            uploader.url_for(data, ".png")
            skips.append(time.perf_counter() - start)
        assert (uploader.uploaded, uploader.skipped) == (args.runs + 1, args.runs)
    print(f"PNG of {statistics.median(sizes) / 1e6:.1f} MB, {args.runs} runs")
    print(
        f"upload (new bytes): median {statistics.median(uploads) * 1000:.0f} ms "
        f"(runs: {', '.join(f'{t * 1000:.0f}' for t in uploads)} ms)"
    )
    print(f"same bytes again (skipped): median {statistics.median(skips) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
