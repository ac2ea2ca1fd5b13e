"""Is the library folder somewhere a library must not live? Inside a folder that another sync tool
copies (Dropbox, OneDrive, iCloud Drive, Google Drive, Nextcloud/ownCloud, pCloud, Box, Syncthing),
or on removable media.

Two sync tools on one SQLite file corrupt it: the other tool copies the database and its WAL
separately, half-written, and puts an older copy back over a newer one (EndNote says the same of
its .enl libraries: never in a cloud-synced folder). A removable drive unplugged mid-write, or
carried to another machine, does the same. So `init`, `pair`, the daemon's start and the web app's
Sync Status page warn, in one sentence that says why; nothing is refused.

`folder_warnings(path, probe)` is pure: everything it knows of the disk comes through `probe`
(a `Probe` over the real filesystem by default; tests give one with a temporary root for the
mount table and /sys). A cloud folder is known by its name among the path's components and by the
marker files its client leaves in the synced folder's root (any ancestor). Removable media: on
Linux a path under /media or /run/media, or on a mount whose block device says removable (or
hangs off USB) in /sys; on macOS a path under /Volumes (the start-up volume resolves to /).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CLOUD = "cloud"
REMOVABLE = "removable"
DESKTOP_INI_BYTES = 4096  # a desktop.ini is a few lines; OneDrive names itself in them


@dataclass(frozen=True)
class FolderWarning:
    """Why the library's folder is a risk: `kind` CLOUD or REMOVABLE, the `service` in words
    (Dropbox, ..., removable media) and `where` the folder (or mount point) that gave it away."""

    kind: str
    service: str
    where: str

    @property
    def message(self) -> str:
        if self.kind == REMOVABLE:
            return (
                f"Warning: this library is on removable media ({self.where}); a drive unplugged or "
                "carried elsewhere mid-write corrupts its SQLite file (EndNote says the same of its .enl "
                "libraries), so keep the library on this machine's own disk and let p2psync sync it."
            )
        return (
            f"Warning: this library is inside a {self.service} folder ({self.where}); two sync tools "
            "on one SQLite file corrupt it (EndNote says the same of its .enl libraries), so move the "
            f"library out of {self.service} and let p2psync alone sync it."
        )

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "service": self.service, "where": self.where, "message": self.message}


@dataclass(frozen=True)
class Probe:
    """What detection reads of the machine. The defaults are the real ones; a test points
    `mounts` and `sys_root` at files it made, and names the `platform`."""

    platform: str = sys.platform
    mounts: Path = Path("/proc/self/mounts")
    sys_root: Path = Path("/sys")
    home: Path = field(default_factory=Path.home)

    def names(self, folder: Path) -> set[str]:
        """The names in a folder (none if it cannot be read)."""
        try:
            with os.scandir(folder) as entries:
                return {entry.name for entry in entries}
        except OSError:
            return set()

    def read(self, file: Path, limit: int = DESKTOP_INI_BYTES) -> bytes:
        try:
            with open(file, "rb") as handle:
                return handle.read(limit)
        except OSError:
            return b""

    def mount_table(self) -> list[tuple[str, str]]:
        """(device, mount point) of each mount, as /proc/self/mounts lists them."""
        out = []
        for line in self.read(self.mounts, 1 << 20).decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2:  # (spaces in a mount point are written \040)
                out.append((parts[0], parts[1].replace("\\040", " ")))
        return out


# A component's name (lower case) -> the service: exact names, then name prefixes.
CLOUD_NAMES = {
    "dropbox": "Dropbox",
    "onedrive": "OneDrive",
    "icloud drive": "iCloud Drive",
    "iclouddrive": "iCloud Drive",
    "google drive": "Google Drive",
    "googledrive": "Google Drive",
    "nextcloud": "Nextcloud",
    "owncloud": "ownCloud",
    "pcloud drive": "pCloud",
    "pclouddrive": "pCloud",
    "box sync": "Box",
}
CLOUD_PREFIXES = {
    "dropbox (": "Dropbox",  # a team's: "Dropbox (Company)"
    "onedrive - ": "OneDrive",  # a business account's: "OneDrive - Company"
    "onedrive-": "OneDrive",  # macOS ~/Library/CloudStorage/OneDrive-Personal
    "googledrive-": "Google Drive",  # macOS ~/Library/CloudStorage/GoogleDrive-me@example.org
    "dropbox-": "Dropbox",
    "box-": "Box",
}
# Marker files a client leaves in the root of the folder it syncs.
CLOUD_MARKERS = {
    ".dropbox": "Dropbox",
    ".dropbox.cache": "Dropbox",
    ".stfolder": "Syncthing",
    ".nextcloudsync.log": "Nextcloud",
    ".owncloudsync.log": "ownCloud",
}


def _named(name: str, parent: PurePosixPath, home: PurePosixPath) -> str | None:
    lower = name.lower()
    if lower in CLOUD_NAMES:
        return CLOUD_NAMES[lower]
    for prefix, service in CLOUD_PREFIXES.items():
        if lower.startswith(prefix):
            return service
    if lower == "box" and parent == home:  # Box Drive's folder; a "Box" elsewhere is just a box
        return "Box"
    return None


def _marked(folder: Path, probe: Probe) -> str | None:
    names = probe.names(folder)
    for marker, service in CLOUD_MARKERS.items():
        if marker in names:
            return service
    for name in names:  # the journal of a Nextcloud or ownCloud client: .sync_<hash>.db
        if (name.startswith(".sync_") or name.startswith("._sync_")) and name.endswith(".db"):
            return "Nextcloud"
    if "desktop.ini" in names:
        text = probe.read(folder / "desktop.ini")
        decoded = text.decode("utf-16", "replace") if text[:2] in (b"\xff\xfe", b"\xfe\xff") else text.decode("latin-1")
        if "onedrive" in decoded.lower():
            return "OneDrive"
    return None


def cloud_folder(path: Path, probe: Probe) -> FolderWarning | None:
    """The cloud-synced folder that holds `path` (itself or an ancestor), if any."""
    home = PurePosixPath(Path(os.path.realpath(probe.home)).as_posix())
    posix = PurePosixPath(path.as_posix())
    if "Library/Mobile Documents" in posix.as_posix():  # where iCloud Drive keeps its files on macOS
        at = posix.as_posix().split("Library/Mobile Documents")[0] + "Library/Mobile Documents"
        return FolderWarning(CLOUD, "iCloud Drive", at)
    for folder in (path, *path.parents):  # the nearest first
        service = _named(folder.name, PurePosixPath(folder.parent.as_posix()), home) if folder.name else None
        if service is None:
            service = _marked(folder, probe)
        if service is not None:
            return FolderWarning(CLOUD, service, str(folder))
    return None


def _mount_of(path: Path, probe: Probe) -> tuple[str, str] | None:
    """The (device, mount point) that holds `path`: the longest mount point above it."""
    best: tuple[str, str] | None = None
    text = path.as_posix()
    for device, point in probe.mount_table():
        inside = text == point or text.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[1])):
            best = (device, point)
    return best


def _removable_device(device: str, probe: Probe) -> bool:
    """Whether /sys says the block device (a disk or one of its partitions) is removable or on USB."""
    if not device.startswith("/dev/"):
        return False  # tmpfs, overlay, a network share: not a block device
    name = device.rsplit("/", 1)[-1]
    block = probe.sys_root / "block"
    disk = block / name if (block / name).exists() else None
    if disk is None:  # a partition: /sys/block/<disk>/<partition>
        disk = next((block / d for d in sorted(probe.names(block)) if (block / d / name).exists()), None)
    if disk is None:
        return False
    if probe.read(disk / "removable", 8).strip() == b"1":
        return True
    try:
        return "/usb" in os.path.realpath(disk)  # a USB disk that calls itself fixed
    except OSError:
        return False


def removable_media(path: Path, probe: Probe) -> FolderWarning | None:
    """The removable drive that holds `path`, if any."""
    parts = path.parts
    if probe.platform == "darwin":
        if len(parts) > 2 and parts[1] == "Volumes":  # the start-up volume resolves to / instead
            return FolderWarning(REMOVABLE, "removable media", f"/Volumes/{parts[2]}")
        return None
    if not probe.platform.startswith("linux"):
        return None
    for top in (("media",), ("run", "media")):
        n = len(top) + 1
        if parts[1:n] == top and len(parts) > n:
            return FolderWarning(REMOVABLE, "removable media", str(Path(*parts[: n + 1])))
    mount = _mount_of(path, probe)
    if mount is not None and mount[1] != "/" and _removable_device(mount[0], probe):
        return FolderWarning(REMOVABLE, "removable media", mount[1])
    return None


def folder_warnings(path: Path, probe: Probe | None = None) -> list[FolderWarning]:
    """Every reason the library folder at `path` is at risk (none: it is where it should be)."""
    probe = probe or Probe()
    where = Path(os.path.realpath(path))  # a symlink into Dropbox is in Dropbox
    found = [cloud_folder(where, probe), removable_media(where, probe)]
    return [w for w in found if w is not None]
