"""What a package must not carry: the machine's folders and secrets.

One `Redactor` per package rewrites every text entry (records, sidecars, the README): a run
folder's absolute path becomes its place in the package, home folders (the current one, and
`/root`, `/home/NAME`, `/Users/NAME` of the machine that ran it) become `~`, and token-like
strings become `<redacted>`. Commands are shown shell-quoted, so they can be pasted.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REDACTED = "<redacted>"
TOKEN = re.compile(r"(?<![A-Za-z0-9])(hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
                   r"|github_pat_[A-Za-z0-9_]{20,}|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,})")
# a path component ends at a character that cannot continue a file name
_END = r"(?![\w.-])"
HOMES = re.compile(r"(?<![\w./~-])(?:/root|/home/[^/\s\"'`]+|/Users/[^/\s\"'`]+)" + _END)


def _place(folder: str) -> re.Pattern:
    return re.compile(r"(?<![\w./-])" + re.escape(folder) + _END)


@dataclass(frozen=True)
class Redactor:
    """Rewrites text for a package: `places` maps absolute folders to their package paths."""

    places: tuple[tuple[re.Pattern, str], ...]
    home: re.Pattern | None

    @classmethod
    def for_runs(cls, runs: dict[Path, str]) -> "Redactor":
        """`runs`: each run folder and its prefix in the package."""
        forms = {}
        for folder, prefix in runs.items():
            for form in {str(Path(folder).resolve()), os.path.abspath(folder)}:
                forms[form] = prefix
        places = tuple((_place(form), prefix) for form, prefix in
                       sorted(forms.items(), key=lambda item: -len(item[0])))
        home = str(Path.home())
        return cls(places, _place(home) if home not in ("", "/") else None)

    def text(self, text: str) -> str:
        for pattern, prefix in self.places:
            text = pattern.sub(prefix, text)
        if self.home is not None:
            text = self.home.sub("~", text)
        text = HOMES.sub("~", text)
        return TOKEN.sub(REDACTED, text)

    def command(self, argv: list[str]) -> str:
        """`acr ARGS...` as a line to paste into a shell: each argument redacted and quoted
        (`shlex.quote`), a leading `~/` left outside the quotes so the shell expands it."""
        return " ".join(["acr", *(_quote(self.text(arg)) for arg in argv[1:])])


def _quote(arg: str) -> str:
    if arg.startswith("~/") and len(arg) > 2:
        return "~/" + shlex.quote(arg[2:])
    return shlex.quote(arg)
