"""TROUBLESHOOTING.md quotes the errors a user can meet; every quoted part must still occur in the package's code,
so the page cannot describe a message that was reworded or removed."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quoted_messages(text: str) -> list[str]:
    "The `...` parts of the first cell of every table row (the message column)."
    out = []
    for line in text.splitlines():
        if line.startswith("| ") and not set(line) <= set("|- "):
            out += re.findall(r"`([^`]+)`", line.split("|")[1])
    return out


def test_every_message_quoted_in_troubleshooting_occurs_in_the_code():
    source = "\n".join(p.read_text() for p in (ROOT / "robust_prune").glob("*.py"))
    quoted = _quoted_messages((ROOT / "TROUBLESHOOTING.md").read_text())
    assert len(quoted) >= 50  # every section quotes its messages
    missing = [q for q in quoted if q not in source]
    assert not missing, f"quoted in TROUBLESHOOTING.md but not in robust_prune/: {missing}"


def test_quoted_messages_are_read_from_the_first_column_only():
    page = "| message | meaning |\n|---|---|\n| `A` … `B` | `not this` |\n| 2 | `nor this` |\ntext `nor this`"
    assert _quoted_messages(page) == ["A", "B"]
