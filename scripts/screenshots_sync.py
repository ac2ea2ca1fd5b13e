"""Make docs/screenshots/sync-status.png and docs/screenshots/conflicts.png with the real browser
(Debian's Chromium through Playwright) and real libraries: a researcher's small library on three
devices ("Home laptop", "Work laptop", "Lab desktop"); the work laptop runs `p2psync daemon` on
127.0.0.1, the lab desktop is switched off, both laptops edited the same reference, and home's
web app has just run "Sync now". Everything lives in a temporary folder and is stopped at the end.

    PYTHONPATH=. .venv/bin/python scripts/screenshots_sync.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from p2psync.model.people import parse_person
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.sync_support import founded, joined
from tests.web_support import CHROMIUM, web_app
from tests.web_sync_support import HOME, WORK, Daemon, ok, ref_id, until

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PAPERS = [
    ("Synaptic plasticity and memory: an evaluation of the hypothesis", "2000", "Martin, S. J.", "Annu Rev Neurosci"),
    ("Long-term potentiation and memory", "2004", "Lynch, M. A.", "Physiol Rev"),
    ("The organization of behavior", "1949", "Hebb, Donald O.", ""),
    ("A synaptic model of memory: long-term potentiation in the hippocampus", "1993", "Bliss, T. V. P.", "Nature"),
    ("Memory consolidation and the medial temporal lobe", "2011", "Squire, Larry R.", "Neuron"),
    (
        "Place cells, grid cells, and the brain's spatial representation system",
        "2008",
        "Moser, Edvard I.",
        "Annu Rev Neurosci",
    ),
]


def build(root: Path) -> tuple[Path, Path, Path, str]:
    home = founded(root / "home", "Neuroscience")
    home.members.rename(HOME)
    for title, year, author, journal in PAPERS:
        home.refs.add(
            {
                "title": title,
                "year": year,
                "authors": [parse_person(author)],
                **({"journal": journal} if journal else {}),
            }
        )
    work = joined(home, root / "work", WORK)
    lab = joined(home, root / "lab", "Lab desktop")
    for library in (home, work, lab):
        library.close()
    return root / "home", root / "work", root / "lab", ref_id(root / "home", "Long-term potentiation")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        home, work, lab, ref = build(root)
        lab_daemon = Daemon(lab, "--no-auto")
        ok("--library", str(home), "sync", "--address", lab_daemon.address)  # home met the lab desktop once...
        lab_daemon.stop()  # ...which is now switched off
        pdf = root / "bliss1993.pdf"
        pdf.write_bytes(b"%PDF-1.4\n" + b"x" * 2_400_000)
        ok("--library", str(lab), "attach", ref_id(lab, "A synaptic model"), str(pdf))
        with Library.open(lab) as a, Library.open(work) as b:
            sync_libraries(a, b)  # (the lab's note of the file reached work; the file itself did not)
        daemon = Daemon(work, "--no-auto")
        try:
            ok("--library", str(home), "sync", "--address", daemon.address)
            ok(
                "--library",
                str(home),
                "ref",
                "edit",
                ref,
                "--title",
                "Long-term potentiation and memory (notes)",
                "--year",
                "2003",
            )
            ok(
                "--library",
                str(work),
                "ref",
                "edit",
                ref,
                "--title",
                "Long-term potentiation and memory: a review",
                "--year",
                "2005",
            )
            ok(
                "--library",
                str(work),
                "ref",
                "add",
                "--title",
                "Sharp wave ripples in memory consolidation",
                "--year",
                "2015",
            )
            with web_app(home) as app, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
                page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
                page.goto(app.login)
                page.goto(app.base + "/sync")
                page.get_by_role("button", name="Sync now").click()
                page.wait_for_selector("#sync-state[data-state=done]", timeout=30_000)
                until(page, lambda: "Conflicts: 1" in page.locator("#sync-local").inner_text())
                page.screenshot(path=str(OUT / "sync-status.png"))
                page.goto(f"{app.base}/conflicts/{ref}")
                page.locator("fieldset[data-field=title] .version", has_text=WORK).get_by_role("radio").check()
                page.get_by_label("New value for Year").fill("2004")
                page.screenshot(path=str(OUT / "conflicts.png"))
                browser.close()
        finally:
            daemon.stop()
    print(OUT / "sync-status.png", OUT / "conflicts.png", file=sys.stderr)


if __name__ == "__main__":
    main()
