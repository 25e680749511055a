"""Reports of unusable rows in input files: one warning per problem, not one per row."""
from __future__ import annotations

import logging
from collections.abc import Sequence

LOCATIONS_SHOWN = 5  # file:line locations a bad-row warning names; the rest are counted


class BadRowReport:
    """Rows of one file with unusable values, logged as one warning per problem: the count and the first few
    `file:line` locations (a box list can have thousands of bad rows; a warning each would bury the log)."""

    # Warnings logged with once=True by this process: a file read again (AVA's detected boxes, for the validation
    # and the test split) is reported the first time only.
    _logged_once: set[str] = set()

    def __init__(self, path: str) -> None:
        self.path = path
        self._counts: dict[str, int] = {}
        self._locations: dict[str, list[str]] = {}

    def needs_locations(self, problem: str) -> bool:
        """Whether the warning for `problem` still has room for locations."""
        return len(self._locations.get(problem, ())) < LOCATIONS_SHOWN

    def add(self, problem: str, count: int, locations: Sequence[tuple[int, str]] = ()) -> None:
        """Count `count` more rows with `problem`; `locations` are (line number, what is wrong) of the first of
        them, in file order."""
        self._counts[problem] = self._counts.get(problem, 0) + count
        shown = self._locations.setdefault(problem, [])
        shown.extend(f"{self.path}:{line} ({detail})" for line, detail in locations[:LOCATIONS_SHOWN - len(shown)])

    def log(self, log: logging.Logger, once: bool = False) -> None:
        """One warning per problem: `<path>: <problem>: <count> row(s): <locations>[, and N more]`; with `once`,
        not when this process logged the same warning before."""
        for problem, count in self._counts.items():
            shown = self._locations[problem]
            more = f", and {count - len(shown)} more" if count > len(shown) else ""
            message = f"{self.path}: {problem}: {count} row{'' if count == 1 else 's'}: {', '.join(shown)}{more}"
            if once:
                if message in BadRowReport._logged_once:
                    continue
                BadRowReport._logged_once.add(message)
            log.warning("%s", message)


def check_bad_fraction(bad: int, total: int, max_fraction: float, description: str) -> None:
    """Fails when more than `max_fraction` (DATA.MAX_BAD_FRACTION) of `total` inputs are bad.

    The RuntimeError reads "<bad> of <total> <description>, more than DATA.MAX_BAD_FRACTION=<max_fraction>".
    """
    if total and bad / total > max_fraction:
        raise RuntimeError(f"{bad} of {total} {description}, more than DATA.MAX_BAD_FRACTION={max_fraction}")
