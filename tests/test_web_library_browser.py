"""The library list in a real browser (Debian's Chromium through Playwright): search as you type,
sorting by a column header, a group made and filled from the page, trash and restore, more rows
as the list scrolls (never all of them), and the list updating by itself when a sync brings a
reference. With P2PSYNC_SCREENSHOTS=DIR, also docs' library.png of a small realistic library."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli
from tests.sync_support import founded, joined
from tests.test_web_library import csl, make_library
from tests.web_support import WebApp, web_app

SHOTS = os.environ.get("P2PSYNC_SCREENSHOTS")

PAPERS: list[dict[str, Any]] = [
    {
        "title": "Long-term potentiation in the hippocampus",
        "authors": "Bliss, Tim; Lømo, Terje",
        "year": "1973",
        "journal": "The Journal of Physiology",
    },
    {
        "title": "The organization of behavior revisited",
        "authors": "Sejnowski, Terrence",
        "year": "1999",
        "journal": "Neuron",
    },
    {
        "title": "Synaptic plasticity: taming the beast",
        "authors": "Abbott, L. F.; Nelson, Sacha",
        "year": "2000",
        "journal": "Nature Neuroscience",
    },
    {
        "title": "A quantitative description of membrane current",
        "authors": "Hodgkin, Alan; Huxley, Andrew",
        "year": "1952",
        "journal": "The Journal of Physiology",
    },
    {
        "title": "Spike-timing-dependent plasticity of glutamatergic synapses",
        "authors": "Bi, Guo-qiang; Poo, Mu-ming",
        "year": "1998",
        "journal": "Journal of Neuroscience",
    },
    {
        "title": "Place cells, grid cells, and the brain's spatial representation system",
        "authors": "Moser, Edvard; Kropff, Emilio; Moser, May-Britt",
        "year": "2008",
        "journal": "Annual Review of Neuroscience",
    },
    {
        "title": "Attention is all you need",
        "authors": "Vaswani, Ashish; Shazeer, Noam",
        "year": "2017",
        "journal": "Advances in Neural Information Processing Systems",
    },
    {
        "title": "Deep learning",
        "authors": "LeCun, Yann; Bengio, Yoshua; Hinton, Geoffrey",
        "year": "2015",
        "journal": "Nature",
    },
    {
        "title": "Neural networks and physical systems with emergent collective computational abilities",
        "authors": "Hopfield, John",
        "year": "1982",
        "journal": "PNAS",
    },
    {
        "title": "Sleep and the price of plasticity",
        "authors": "Tononi, Giulio; Cirelli, Chiara",
        "year": "2014",
        "journal": "Neuron",
    },
    {
        "title": "Dendritic computation",
        "authors": "London, Michael; Häusser, Michael",
        "year": "2005",
        "journal": "Annual Review of Neuroscience",
    },
    {
        "title": "The hippocampus as a cognitive map",
        "authors": "O'Keefe, John; Nadel, Lynn",
        "year": "1978",
        "journal": "Oxford University Press",
    },
    {
        "title": "Memory consolidation in sleep",
        "authors": "Diekelmann, Susanne; Born, Jan",
        "year": "2010",
        "journal": "Nature Reviews Neuroscience",
    },
    {
        "title": "Homeostatic plasticity in the developing nervous system",
        "authors": "Turrigiano, Gina; Nelson, Sacha",
        "year": "2004",
        "journal": "Nature Reviews Neuroscience",
    },
    {
        "title": "Mastering the game of Go without human knowledge",
        "authors": "Silver, David; Schrittwieser, Julian",
        "year": "2017",
        "journal": "Nature",
    },
]


def add_papers(path: Path, papers: list[dict[str, Any]]) -> list[str]:
    ids = []
    for paper in papers:
        args = ["--library", str(path), "ref", "add", "--title", paper["title"], "--year", paper["year"]]
        args += ["--journal", paper["journal"]]
        for author in paper["authors"].split("; "):
            args += ["--author", author]
        done = cli(*args)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    return ids


@contextlib.contextmanager
def serving(path: Path, page: Any) -> Iterator[WebApp]:
    """The app for the block; the page leaves it first (an open event stream would hold its stop)."""
    with web_app(path) as app:
        try:
            yield app
        finally:
            page.goto("about:blank")


def open_list(page: Any, login: str) -> None:
    page.goto(login)
    page.wait_for_selector("#reference-table")


def titles(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#rows td.col-title a").all_inner_texts()]


def wait_until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    assert condition()


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "Neuro").returncode == 0
    add_papers(path, PAPERS[:8])
    return path


def test_search_finds_a_reference_as_you_type(small: Path, page: Any) -> None:
    with serving(small, page) as app:
        open_list(page, app.login)
        assert len(titles(page)) == 8
        page.locator("#search").press_sequentially("plastic", delay=40)
        wait_until(lambda: len(titles(page)) == 2)
        assert sorted(titles(page)) == [
            "Spike-timing-dependent plasticity of glutamatergic synapses",
            "Synaptic plasticity: taming the beast",
        ]
        assert "q=plastic" in page.url  # the address says what is shown (reload, back, share)
        page.locator("#search").fill("")
        page.locator("#search").press("Enter")
        wait_until(lambda: len(titles(page)) == 8)


def test_sorting_by_year_changes_the_order(small: Path, page: Any) -> None:
    with serving(small, page) as app:
        open_list(page, app.login)
        years = lambda: page.locator("#rows td.col-year").all_inner_texts()  # noqa: E731
        page.get_by_role("link", name="Year").click()
        page.wait_for_selector('th.col-year[aria-sort="ascending"]')
        assert years() == sorted(years()) and years()[0] == "1952"
        page.get_by_role("link", name="Year").click()
        page.wait_for_selector('th.col-year[aria-sort="descending"]')
        assert years() == sorted(years(), reverse=True) and years()[0] == "2017"


def test_a_group_made_and_filled_on_the_page_shows_in_the_sidebar(small: Path, page: Any) -> None:
    with serving(small, page) as app:
        open_list(page, app.login)
        page.get_by_label("New group").fill("To read")
        page.get_by_role("button", name="Create group").click()
        page.wait_for_selector("text=Created group 'To read'.")
        page.get_by_role("link", name="All references").click()
        page.get_by_label("Select Deep learning").check()
        page.get_by_label("Group", exact=True).select_option(label="To read")
        page.get_by_role("button", name="Add to group").click()
        page.wait_for_selector("text=Added 1 reference to 'To read'.")
        group = page.locator("#library-sidebar .groups a", has_text="To read")
        assert group.locator(".count").inner_text() == "1"
        group.click()
        page.wait_for_selector("h1:has-text('To read')")
        assert titles(page) == ["Deep learning"]


def test_trash_and_restore_a_reference(small: Path, page: Any) -> None:
    with serving(small, page) as app:
        open_list(page, app.login)
        page.get_by_label("Select Attention is all you need").check()
        page.get_by_role("button", name="Move to trash").click()
        page.wait_for_selector("text=Moved 1 reference to the trash.")
        assert "Attention is all you need" not in titles(page) and len(titles(page)) == 7
        page.locator("#library-sidebar").get_by_role("link", name="Trash").click()
        page.wait_for_selector("h1:has-text('Trash')")
        assert titles(page) == ["Attention is all you need"]
        page.get_by_label("Select Attention is all you need").check()
        page.get_by_role("button", name="Restore").click()
        page.wait_for_selector("text=Restored 1 reference from the trash.")
        page.get_by_role("link", name="All references").click()
        wait_until(lambda: len(titles(page)) == 8)
        assert "Attention is all you need" in titles(page)


def test_scrolling_loads_more_rows_a_page_at_a_time(tmp_path: Path, page: Any) -> None:
    path = make_library(tmp_path / "lib", [csl(i) for i in range(300)])
    with serving(path, page) as app:
        rows_asked: list[str] = []
        page.on("request", lambda r: rows_asked.append(r.url) if "/library/rows" in r.url else None)
        open_list(page, app.login)
        count = lambda: page.locator("#rows tr").count()  # noqa: E731
        assert count() == 50
        page.mouse.wheel(0, 3000)
        wait_until(lambda: count() >= 100)
        assert count() < 300  # a page more, not the library
        for _ in range(10):
            if count() == 300:
                break
            page.locator("#rows tr").last.scroll_into_view_if_needed()
            page.mouse.wheel(0, 5000)
            time.sleep(0.3)
        wait_until(lambda: count() == 300)
        ids = page.locator('#rows input[name="ref"]').evaluate_all("boxes => boxes.map(b => b.value)")
        assert len(set(ids)) == 300  # each once
        assert len(rows_asked) == 5 and all("after=" in url for url in rows_asked)
        assert page.locator("#next-page").count() == 0


def test_the_list_updates_by_itself_when_a_sync_brings_a_reference(tmp_path: Path, page: Any) -> None:
    a = founded(tmp_path / "a", "Laptop")
    b = joined(a, tmp_path / "b", "Desktop")
    a.add_reference({"title": "Already here", "year": "2001"})
    a.close()
    with serving(tmp_path / "a", page) as app:
        open_list(page, app.login)
        assert titles(page) == ["Already here"]
        b.add_reference({"title": "Brought by the sync", "year": "2024"})
        with Library.open(tmp_path / "a") as mine:  # as the daemon's sync would, in another process
            sync_libraries(mine, b)
        wait_until(lambda: "Brought by the sync" in titles(page))
        page.wait_for_selector("#library-sidebar a:has-text('All references') .count:text-is('2')")
    b.close()


def test_screenshot_of_the_library(tmp_path: Path, page: Any) -> None:
    """The docs' picture of the library, checked on every run; saved under P2PSYNC_SCREENSHOTS=DIR
    when that is set (else into the test's own folder)."""
    a = founded(tmp_path / "a", "Laptop")
    b = joined(a, tmp_path / "b", "Desktop")
    a.close()
    ids = add_papers(tmp_path / "a", PAPERS)
    for name, members in (("Thesis chapter 2", ids[:6]), ("Sleep and memory", [ids[9], ids[12]])):
        assert cli("--library", str(tmp_path / "a"), "group", "create", name).returncode == 0
        assert cli("--library", str(tmp_path / "a"), "group", "add", name, *members).returncode == 0
    with Library.open(tmp_path / "a") as mine:
        sync_libraries(mine, b)
        mine.edit_reference(ids[2], {"journal": "Nature Neurosci."})
        b.edit_reference(ids[2], {"journal": "Nat. Neurosci."})
        sync_libraries(mine, b)
    b.close()
    with serving(tmp_path / "a", page) as app:
        open_list(page, app.login)
        page.get_by_role("link", name="Author").click()
        page.wait_for_selector('th.col-author[aria-sort="ascending"]')
        assert page.locator(".conflict-mark").count() == 1
        assert json.loads(cli("--library", str(tmp_path / "a"), "group", "list", "--json").stdout)
        shots = Path(SHOTS) if SHOTS else tmp_path / "shots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "library.png"))
        assert (shots / "library.png").stat().st_size > 10_000
