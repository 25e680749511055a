"""AVA label maps (pbtxt): the class ids and names a detector is trained on and scored over.

Read here, below the data and evaluation layers, because both need them: the dataset to map actions of
AVA.CLASS_SUBSET to model outputs, the evaluator to choose the scored classes.
"""
from __future__ import annotations

from iopath.common.file_io import g_pathmgr


def read_labelmap(path: str) -> list[dict]:
    """Label map pbtxt -> [{"id", "name"}, ...] in file order, parsed line by line like the official reader.

    A line starting with two spaces and `name:` sets the name; one starting with `  id:` or `  label_id:` emits an
    entry. Both `item { name / id }` (the 60-class list) and `label { name / label_id / label_type }` (the full
    80-class list) work. Raises ValueError naming the file and line of a malformed entry, or the file when it
    lists no class.
    """
    labelmap: list[dict] = []
    name = ""
    with g_pathmgr.open(path, "r", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if line.startswith("  name:"):
                parts = line.split('"')
                if len(parts) < 3:
                    raise ValueError(f"{path}:{line_number}: name is not in double quotes: {line.strip()!r}")
                name = parts[1]
            elif line.startswith("  id:") or line.startswith("  label_id:"):
                try:
                    class_id = int(line.strip().split(" ")[-1])
                except ValueError:
                    raise ValueError(f"{path}:{line_number}: class id is not an integer: {line.strip()!r}") from None
                if class_id < 1:
                    raise ValueError(f"{path}:{line_number}: class ids must be >= 1, got {class_id}")
                labelmap.append({"id": class_id, "name": name})
    if not labelmap:
        raise ValueError(f"{path}: no class ids found (expected lines like '  id: 1' or '  label_id: 1' indented by "
                         "exactly two spaces)")
    return labelmap
