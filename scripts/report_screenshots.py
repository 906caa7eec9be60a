"""Screenshots of `snakemake --report` in headless Chromium: the start page, then the first items of each category
(of each subcategory, where a category has some).

    python scripts/report_screenshots.py report.html OUT_DIR [--chromium /usr/bin/chromium]

Needs the `playwright` Python package (its browser download is not needed: it drives the system's Chromium,
Debian's `chromium` package). Prints each screenshot's path and the categories it found.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--items", type=int, default=2, help="items opened per category")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=args.chromium, headless=True,
                                                        args=FLAGS, viewport={"width": 1500, "height": 1000})
        page = browser.new_page()
        page.goto(args.report.resolve().as_uri())
        page.wait_for_timeout(2000)
        shot = args.out / "00_start.png"
        page.screenshot(path=str(shot), full_page=True)
        print(shot)
        texts = _texts(page)
        categories = [t for t in dict.fromkeys(texts) if t in ("Benchmark", "Structure awareness", "Loss ablation", "Sweep")]
        print("categories:", categories)
        for i, name in enumerate(categories, 1):
            _open(page, args.report, [name])
            subcategories = [t for t in dict.fromkeys(_texts(page)) if t not in texts and t != "Results"]
            for k, sub in enumerate(subcategories or [None]):
                path = [name] if sub is None else [name, sub]
                _open(page, args.report, path)
                slug = re.sub(r"\W+", "_", "_".join(path).lower())
                files = list(dict.fromkeys(t.strip() for t in page.locator("td").all_inner_texts()
                                           if t.strip().startswith("results/")))
                print(f"{' / '.join(path)}: {len(files)} items")
                for j, item in enumerate(files[: args.items]):
                    row = page.locator("tr").filter(has_text=item).first
                    row.locator("a[iconname=eye]").click()  # shows the item (a table, an image) with its caption
                    page.wait_for_timeout(1500)
                    shot = args.out / f"{i:02d}{chr(97 + k) if sub else ''}_{slug}_{j}.png"
                    page.screenshot(path=str(shot))
                    print(shot, item)
        browser.close()


def _texts(page) -> list[str]:
    return [t.strip() for t in page.locator("a, button, li, span").all_inner_texts() if t.strip()]


def _open(page, report: Path, path: list[str]) -> None:
    """From the start page, click through a category (and a subcategory) of the menu."""
    page.goto(report.resolve().as_uri())
    page.wait_for_timeout(1500)
    for name in path:
        page.get_by_text(name, exact=True).first.click()
        page.wait_for_timeout(1000)


if __name__ == "__main__":
    main()
