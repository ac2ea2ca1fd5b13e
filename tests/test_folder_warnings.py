"""A library inside a cloud-synced folder or on removable media is warned about (issue 23, point 6):
detection (p2psync/folder_warnings.py) on real temporary folders holding each client's marker or
name, and on a mount table and /sys made for the test; then `init`, `pair`, the daemon's start and
the web app's Sync Status page say it, in one sentence, and in --json as a `warnings` list."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from p2psync.folder_warnings import CLOUD, REMOVABLE, FolderWarning, Probe, folder_warnings
from tests.support import P2PSYNC, cli
from tests.web_support import log_in, read_first_line, request, web_app


def probe(tmp_path: Path, platform: str = "linux", mounts: str = "") -> Probe:
    table = tmp_path / "mounts"
    table.write_text(mounts)
    return Probe(platform=platform, mounts=table, sys_root=tmp_path / "sys", home=tmp_path / "home")


def only(warnings: list[FolderWarning]) -> FolderWarning:
    assert len(warnings) == 1, warnings
    return warnings[0]


@pytest.mark.parametrize(
    ("marker", "service"),
    [
        (".dropbox", "Dropbox"),
        (".dropbox.cache", "Dropbox"),
        (".stfolder", "Syncthing"),
        (".nextcloudsync.log", "Nextcloud"),
        (".owncloudsync.log", "ownCloud"),
        (".sync_3f2a9c.db", "Nextcloud"),
    ],
)
def test_a_marker_in_any_ancestor_names_the_service(tmp_path: Path, marker: str, service: str) -> None:
    synced = tmp_path / "home" / "Papers"
    (synced / "lab" / "lib").mkdir(parents=True)
    (synced / marker).mkdir() if marker == ".stfolder" else (synced / marker).write_text("")
    warning = only(folder_warnings(synced / "lab" / "lib", probe(tmp_path)))
    assert (warning.kind, warning.service, warning.where) == (CLOUD, service, str(synced))
    assert service in warning.message and "corrupt" in warning.message and ".enl" in warning.message


def test_a_desktop_ini_that_names_onedrive(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "Work files"
    (folder / "lib").mkdir(parents=True)
    ini = "[.ShellClassInfo]\r\nIconResource=C:\\Program Files\\Microsoft OneDrive\\OneDrive.exe,0\r\n"
    (folder / "desktop.ini").write_bytes(b"\xff\xfe" + ini.encode("utf-16-le"))  # as Windows writes it
    assert only(folder_warnings(folder / "lib", probe(tmp_path))).service == "OneDrive"
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\r\nIconResource=folder.ico,0\r\n")
    assert folder_warnings(folder / "lib", probe(tmp_path)) == []  # any other desktop.ini: nothing


@pytest.mark.parametrize(
    ("parts", "service"),
    [
        (("Dropbox",), "Dropbox"),
        (("Dropbox (Lab)",), "Dropbox"),
        (("OneDrive - University",), "OneDrive"),
        (("Library", "CloudStorage", "OneDrive-Personal"), "OneDrive"),
        (("Library", "CloudStorage", "GoogleDrive-me@example.org", "My Drive"), "Google Drive"),
        (("Google Drive",), "Google Drive"),
        (("Nextcloud",), "Nextcloud"),
        (("pCloudDrive",), "pCloud"),
        (("Box",), "Box"),
        (("Library", "Mobile Documents", "com~apple~CloudDocs"), "iCloud Drive"),
    ],
)
def test_a_well_known_folder_name(tmp_path: Path, parts: tuple[str, ...], service: str) -> None:
    library = tmp_path.joinpath("home", *parts, "refs")
    library.mkdir(parents=True)
    assert only(folder_warnings(library, probe(tmp_path))).service == service


def test_an_ordinary_folder_is_not_warned_about(tmp_path: Path) -> None:
    library = tmp_path / "home" / "Documents" / "Box" / "refs"  # a "Box" not in the home folder itself
    library.mkdir(parents=True)
    assert folder_warnings(library, probe(tmp_path, mounts="/dev/sda1 / ext4 rw 0 0\n")) == []


def test_a_symlink_into_dropbox_is_in_dropbox(tmp_path: Path) -> None:
    (tmp_path / "home" / "Dropbox" / "lib").mkdir(parents=True)
    (tmp_path / "home" / "lib").symlink_to(tmp_path / "home" / "Dropbox" / "lib")
    assert only(folder_warnings(tmp_path / "home" / "lib", probe(tmp_path))).service == "Dropbox"


def test_removable_media_on_linux(tmp_path: Path) -> None:
    assert only(folder_warnings(Path("/media/ann/STICK/lib"), probe(tmp_path))).where == "/media/ann"
    warning = only(folder_warnings(Path("/run/media/ann/STICK/lib"), probe(tmp_path)))
    assert (warning.kind, warning.where) == (REMOVABLE, "/run/media/ann")
    assert "removable media" in warning.message
    # A drive mounted elsewhere: /sys says whether its disk is removable (here a partition of sdb).
    sys_block = tmp_path / "sys" / "block"
    (sys_block / "sdb" / "sdb1").mkdir(parents=True)
    (sys_block / "sdb" / "removable").write_text("1\n")
    (sys_block / "sda" / "sda1").mkdir(parents=True)
    (sys_block / "sda" / "removable").write_text("0\n")
    table = "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/field\\040data vfat rw 0 0\n"
    warning = only(folder_warnings(Path("/mnt/field data/lib"), probe(tmp_path, mounts=table)))
    assert warning.where == "/mnt/field data"
    assert folder_warnings(Path("/srv/lib"), probe(tmp_path, mounts=table)) == []  # on the fixed disk


def test_removable_media_on_macos_is_any_volume_but_the_start_up_one(tmp_path: Path) -> None:
    warning = only(folder_warnings(Path("/Volumes/USB STICK/lib"), probe(tmp_path, platform="darwin")))
    assert (warning.kind, warning.where) == (REMOVABLE, "/Volumes/USB STICK")
    assert folder_warnings(Path("/Users/ann/lib"), probe(tmp_path, platform="darwin")) == []


# --- the commands say it ----------------------------------------------------------------------------


def dropbox(tmp_path: Path) -> Path:
    folder = tmp_path / "Shared"
    folder.mkdir()
    (folder / ".dropbox").write_text("{}")
    return folder / "lib"


def test_init_warns_in_one_sentence_and_in_json(tmp_path: Path) -> None:
    library = dropbox(tmp_path)
    done = cli("--library", str(library), "init", "--json")
    assert done.returncode == 0, done.stderr
    [warning] = json.loads(done.stdout)["warnings"]
    assert warning["service"] == "Dropbox" and warning["where"] == str(tmp_path / "Shared")
    assert done.stderr.strip() == warning["message"]  # one sentence on stderr
    assert done.stderr.count(". ") == 0 and done.stderr.strip().endswith(".")
    plain = cli("--library", str(tmp_path / "elsewhere"), "init")
    assert plain.returncode == 0 and plain.stderr == ""


def test_pair_warns(tmp_path: Path) -> None:
    library = dropbox(tmp_path)
    assert cli("--library", str(library), "init").returncode == 0
    done = cli("--library", str(library), "pair", "--no-mdns", "--listen", "127.0.0.1:0", "--timeout", "1s")
    assert "inside a Dropbox folder" in done.stderr, done.stderr


def test_the_daemon_warns_at_start_in_its_log_and_json(tmp_path: Path) -> None:
    library = dropbox(tmp_path)
    assert cli("--library", str(library), "init").returncode == 0
    process = subprocess.Popen(
        [*P2PSYNC, "--library", str(library), "daemon", "--listen", "127.0.0.1:0", "--no-mdns", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        [warning] = json.loads(read_first_line(process))["warnings"]
        assert warning["service"] == "Dropbox"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert "inside a Dropbox folder" in err, err


def test_the_sync_status_page_shows_it(tmp_path: Path) -> None:
    library = dropbox(tmp_path)
    assert cli("--library", str(library), "init").returncode == 0
    with web_app(library) as app:
        page = request(app.base + "/sync", headers=log_in(app, app.login)).text
    assert 'class="folder-warning"' in page and "inside a Dropbox folder" in page
