"""What a generated Bash command would destroy: ``destructive(cmd)`` names the utilities in it that delete or
overwrite data or stop processes or the machine, found through bash.py's template (``api.destructive_warnings`` warns
with them)."""
from __future__ import annotations

import re

from .bash import _WRAPPERS, template

_DESTRUCTIVE = {"rm": "deletes files", "rmdir": "deletes directories", "unlink": "deletes files",
                "shred": "overwrites and deletes files", "truncate": "cuts files short", "dd": "writes raw blocks",
                "mkfs": "formats a file system", "wipefs": "erases file-system signatures",
                "kill": "stops processes", "pkill": "stops processes", "killall": "stops processes",
                "shutdown": "stops the machine", "reboot": "restarts the machine", "halt": "stops the machine",
                "poweroff": "stops the machine"}
_DESTRUCTIVE_WORD = re.compile(r"(?<![\w.-])(" + "|".join(_DESTRUCTIVE) + r")(?![\w-])|(?<!\w)-delete\b")
# commands whose arguments can hold a command the template keeps as a plain word (a shell string, a wrapper it does
# not unwrap, a wrapper's long option taking a value): where one appears, the words are scanned as well
_INDIRECT = {"sh", "bash", "dash", "zsh", "ksh", "eval", "su", "runuser", "doas", "parallel", "busybox", "stdbuf",
             "ionice", "chroot", "setsid", "flock", "ssh", *_WRAPPERS}


def _utility(name: str) -> str:
    return "mkfs" if name.startswith("mkfs.") else name


def _walk(node, hits: list[str], names: set[str]) -> None:
    if not isinstance(node, tuple):
        return
    if len(node) == 5 and node[0] == "cmd":
        # a command named by a substitution (`$(which rm) -rf x`) is not known until it runs: scan the words
        name = _utility(node[1]) if isinstance(node[1], str) else "sh"
        names.add(name)
        if name in _DESTRUCTIVE:
            hits.append(f"{name} {_DESTRUCTIVE[name]}")
        if name == "find" and "-delete" in node[2]:
            hits.append("find -delete deletes files")
    for child in node:
        _walk(child, hits, names)


def _scan(cmd: str) -> list[str]:
    return ["-delete deletes files" if m.group(1) is None else f"{m.group(1)} {_DESTRUCTIVE[m.group(1)]}"
            for m in _DESTRUCTIVE_WORD.finditer(cmd)]


def destructive(cmd: str) -> list[str]:
    """What in a Bash command deletes or overwrites data, or stops processes or the machine, each once, in order:
    ``find . -mtime -1 -exec rm {} \\;`` gives ``["rm deletes files"]``. Utilities are found wherever the
    template (bash.py) puts a command: pipelines, lists, ``$( )``, ``find -exec``, behind the wrappers it unwraps
    (``xargs rm``, ``sudo dd``). Where a shell string or another indirection may hold one (``sh -c 'rm x'``,
    ``parallel rm``, ``ssh host rm x``, ``$(which rm) -rf x``), and for a command bashlex cannot parse, the words
    are scanned too, which errs towards a warning (``bash -c 'echo rm'``). A text with none of the words (most
    commands) is passed over without parsing. Not flagged: ``>`` overwriting a file, ``mv``, ``tee``, ``rsync --delete``, ``git rm``,
    ``git clean``."""
    if not _DESTRUCTIVE_WORD.search(cmd):
        return []
    tree, hits, names = template(cmd), [], set()
    if tree is not None:
        _walk(tree, hits, names)
    if tree is None or names & _INDIRECT:
        hits += _scan(cmd)
    return list(dict.fromkeys(hits))
