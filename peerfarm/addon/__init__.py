"""The Blender add-on as a zip Blender installs: ``peerfarm addon PATH`` writes it.

This package owns the add-on's files (``peerfarm_blender/``: ``__init__`` is the panel and
operators, ``farm`` the standard-library client of the control API) and :func:`write_zip`, which
packs them in one folder of the zip with a ``blender_manifest.toml``. One zip serves every
Blender: 4.2 and later install it as an extension (the manifest; "Install from Disk"), older
ones as a legacy add-on (``bl_info`` in ``__init__``; Preferences > Add-ons > Install).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from peerfarm import __version__

#: The add-on's module name inside Blender, and its extension id.
ADDON_ID = "peerfarm_blender"
SOURCE = Path(__file__).resolve().parent / ADDON_ID
#: The add-on's own files, packed in this order.
FILES = ("__init__.py", "farm.py")

MANIFEST = f"""\
schema_version = "1.0.0"
id = "{ADDON_ID}"
version = "{__version__}"
name = "peerfarm"
tagline = "Submit this file to a peerfarm render farm"
maintainer = "peerfarm"
type = "add-on"
blender_version_min = "4.2.0"
license = ["SPDX:MIT"]
tags = ["Render"]

[permissions]
network = "Talks to the peerfarm daemon on this machine"
files = "Saves the open file and reads the daemon's control file"
"""


def write_zip(path: Path) -> Path:
    """Write the add-on zip at ``path`` (a folder: ``peerfarm_blender.zip`` inside it)."""
    target = path / f"{ADDON_ID}.zip" if path.is_dir() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in FILES:
            archive.write(SOURCE / name, f"{ADDON_ID}/{name}")
        archive.writestr(f"{ADDON_ID}/blender_manifest.toml", MANIFEST)
    return target
