"""Class-name lists in label order: the shipped Kinetics lists and `classes.txt` files (one name per line).

The shipped lists (`class_lists/kinetics{400,600,700}.txt`, package data) are the official class names sorted
alphabetically, which is the label order of the official annotation CSVs, of `tools/prepare_data.py csv` lists made
from them and of the official checkpoints. `tools/prepare_data.py csv` writes a dataset's `classes.txt` in the same
format.
"""
from __future__ import annotations

from importlib import resources

from iopath.common.file_io import g_pathmgr

CLASSES_FILE = "classes.txt"
_SHIPPED_FOLDER = "class_lists"


def class_key(name: str) -> str:
    """The spelling-independent identity of a class name: quotes stripped, underscores read as spaces."""
    return " ".join(name.strip().strip("\"'").replace("_", " ").split())


def display_name(name: str) -> str:
    """A class name as written in a list or a folder name, without surrounding blanks or quotes."""
    return name.strip().strip("\"'")


def parse_class_names(text: str, source: str) -> list[str]:
    """Names in label order from one-name-per-line `text` (blank lines ignored); errors name `source`."""
    names = [display_name(line) for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{source} lists no class names (expected one name per line, in label order)")
    keys = [class_key(name) for name in names]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{source}: classes listed twice: {', '.join(repeated[:5])}")
    return names


def read_class_names(path: str) -> list[str]:
    """The class names of a `classes.txt`-style file, in label order."""
    if not g_pathmgr.isfile(path):
        raise FileNotFoundError(f"Class-name file not found: {path}")
    with g_pathmgr.open(path, "r", encoding="utf-8") as f:
        return parse_class_names(f.read(), path)


def shipped_lists() -> list[str]:
    """Names of the class lists shipped with the package (e.g. kinetics400)."""
    folder = resources.files(__package__) / _SHIPPED_FOLDER
    return sorted(entry.name[: -len(".txt")] for entry in folder.iterdir() if entry.name.endswith(".txt"))


def shipped_class_names(name: str) -> list[str]:
    """The shipped list `name` (one of `shipped_lists()`)."""
    known = shipped_lists()
    if name not in known:
        raise KeyError(f"No shipped class list {name!r}; shipped: {', '.join(known)}")
    text = (resources.files(__package__) / _SHIPPED_FOLDER / f"{name}.txt").read_text(encoding="utf-8")
    return parse_class_names(text, f"the shipped list {name}")
