"""Render the demo's report in headless Chromium and check the picture (run by hand).

    .venv/bin/python benchmarks/render_report.py [--out /tmp/report.png]

Runs ``pairbatch demo`` into a temporary folder, opens its ``report.html`` in headless
Chromium (Debian's ``chromium``; no network: the report is self-contained) and writes a
screenshot. The check: the page's plots are inline PNGs, so the screenshot has far more
non-white pixels than the page's text alone would give; it prints that share.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,2400",
]


def ink_share(png: bytes) -> float:
    """Share of non-white pixels of an 8-bit RGB(A) PNG (no imaging library needed)."""
    width = int.from_bytes(png[16:20], "big")
    color_type = png[25]
    channels = {2: 3, 6: 4}[color_type]
    data, pos = b"", 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels + 1
    rows = [raw[i + 1 : i + stride] for i in range(0, len(raw), stride)]
    # Filtered bytes are not pixels, but a row of all-white pixels filters to zeros or
    # 255s either way: counting rows with anything else is enough to tell ink.
    inked = sum(1 for row in rows if row.strip(b"\x00").strip(b"\xff"))
    return inked / max(len(rows), 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="report.png")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium is not installed (apt-get install chromium)")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        demo = [
            sys.executable,
            "-m",
            "pairbatch.cli",
            "demo",
            "--output-dir",
            tmp,
            "--latency",
            "0.5",
        ]
        subprocess.run(demo, check=True, capture_output=True)
        report = Path(tmp) / "report.html"
        shot = Path(args.out).resolve()
        profile = Path(tmp) / "chromium-profile"
        subprocess.run(
            [
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                report.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    share = ink_share(shot.read_bytes())
    print(f"screenshot {shot}: {share:.0%} of its rows carry ink (plots and tables)")
    return 0 if share > 0.3 else 1


if __name__ == "__main__":
    sys.exit(main())
