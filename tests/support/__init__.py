"""Helpers shared by the test layers (not tests): repository paths, renderer marks and tasks,
ledger builders, generated .blend scenes and PNG files."""

from pathlib import Path

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
DATA = ROOT / "tests" / "data"

#: A command-renderer frame script's body: one tiny output per frame (``LocalFarm.script``).
TINY_FRAME = 'set -eu\nprintf \'frame %s\\n\' "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame.txt"'
