"""Metrics for Bash one-liners (NL2Bash): syntactic validity and template match.

``is_valid(cmd)``: bashlex is the authority (it parsed nothing ``bash -n`` rejects in our
measurements) but lacks ``time``, ``$(( ))``, ``$[ ]``, ``[[ ]]``, arrays, ``for ((;;))``,
``case``, some process substitutions, and sometimes crashes. tree-sitter-bash decides only
when bashlex raised NotImplementedError/crashed or tree-sitter's tree holds such a construct;
alone it is too lenient (stray reserved words ``done ls``, ``find . ;; -x`` parse as
commands; those are rejected here). One odd trailing backslash is dropped (bash accepts
``cmd \\`` at EOF). Acceptance rates vs ``bash -O extglob -n`` as oracle (garbage sets
derived from the references by seeded throw-away scripts, not shipped):

    set (size)                          bash   bashlex  tree-sitter  either  is_valid
    train+dev references (10085 rows)   .9961  .9896    .9931        .9937   .9947
    token soup, shuffled tokens (1422)  .7729  .7644    .7433        .7700   .7686
    truncated after quote/paren (1664)  .4465  .4423    .4435        .4435   .4459
    operator/keyword inserted (1500)    .4467  .4220    .5140        .5167   .4273
    refs' -exec with \\; removed (839)   .9976  .9964    .9952        .9964   .9976

``is_valid`` agrees with bash on .9986/.9958/.9994/.9807/1.0 of these and accepted none of
the commands bash rejects (tree-sitter alone wrongly accepts 130 keyword-inserted ones).
Token soup is mostly *valid* bash, as is ``find . -exec rm {}`` without ``\\;``: syntax only,
find fails at run time. Rejected though bash accepts: extglob ``!(x)``, body-less here-docs,
a few ``$(( ))``. ~0.4% of references (``<file>`` placeholders, open quotes) are invalid.

``template(cmd)``: the command with every argument abstracted, after NL2Bash's template
match (Lin et al. 2018). A simple command is ``('cmd', name, flags, args, extras)``: name =
basename of the utility (``/bin/rm`` == ``rm``); flags = sorted multiset (``-la`` ==
``-l -a`` == ``-al``; ``--x=v`` and ``-k2`` give the flag plus an argument; ``-5`` -> ``-#``);
args = one ``'_'`` per argument (count kept; quoting, ``{}`` irrelevant), or ``('$()', T)``
/ ``('<()', T)`` for a word holding a command (``$()`` == backticks) / process substitution;
extras = redirections ``(op, target)`` in order (``2>/dev/null`` -> ``('2>', '_')``,
``2>&1`` -> ``('2>&', '1')``) and prefix assignments ``('=', value)``. ``find`` keeps its
expression order (it is a program) but sorts runs of side-effect-free tests; predicate
arguments are dropped by arity (``-mtime -1`` == ``-mtime +7``); ``-not`` -> ``!`` (bound
to the test it negates), ``-or`` -> ``-o``, ``-a`` dropped, ``\\( \\)`` kept, roots are args;
``-exec/-execdir/-ok/-okdir CMD ;`` -> ``(pred, T_CMD)``: ``;`` and ``+`` deliberately equal,
a missing terminator adds ``'unterminated'``. Wrappers (xargs sudo nohup time nice env
timeout watch exec command) parse their options; the sub-command's template is their last
arg. Structure: ``('pipeline', A, '|', B)``, ``('list', A, '&&', B, ';', C)`` (trailing
``;`` dropped, ``&`` kept), ``('compound', '(', L, ')')``, ``('for', ...)``/if/while with
reserved words kept. bashlex's gaps are bridged by rewriting the ``time`` keyword to the
utility and ``$((...))`` to a plain argument (so rarely template() is non-None while
is_valid is False). None when bashlex cannot parse: template() is non-None for .9933 of
train+dev reference rows (10017/10085). Left alone: ``sh -c '...'`` strings are arguments;
``[[ ]]`` gives None; a generic flag's arity is unknown (``-e PAT`` counts PAT as an arg).
"""
from __future__ import annotations

import os
import re

import bashlex

_TS_PARSER = None
# tree-sitter node types of constructs bashlex does not (fully) implement
_TS_UNSUPPORTED = {"test_command", "arithmetic_expansion", "c_style_for_statement", "array",
                   "process_substitution", "heredoc_redirect", "case_statement"}
_RESERVED = {"do", "done", "then", "fi", "else", "elif", "esac", "in", "]]", "}", "{", ";;"}


def _ts_parser():
    global _TS_PARSER
    if _TS_PARSER is None:
        import tree_sitter
        import tree_sitter_bash
        _TS_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bash.language()))
    return _TS_PARSER


def _clean(cmd: str) -> str:
    """Drop one trailing backslash left by an unfinished line continuation."""
    cmd = cmd.strip()
    tail = len(cmd) - len(cmd.rstrip("\\"))
    return cmd[:-1].rstrip() if tail % 2 else cmd


def _ts_nodes(node):
    yield node
    for child in node.children:
        yield from _ts_nodes(child)


def _ts_verdict(cmd: str) -> tuple[bool, bool]:
    """(tree-sitter thinks it valid, tree holds a construct bashlex lacks)."""
    root = _ts_parser().parse(cmd.encode()).root_node
    nodes = list(_ts_nodes(root))
    stray = any((n.type == "command_name" and n.text.decode() in _RESERVED)
                or (n.type == ";;" and n.parent.type != "case_item") for n in nodes)
    ok = not root.has_error and not any(n.is_missing for n in nodes) and not stray
    return ok, any(n.type in _TS_UNSUPPORTED for n in nodes)


def is_valid(cmd: str) -> bool:
    """Syntactic validity: bashlex, with tree-sitter-bash for what bashlex cannot parse."""
    cmd = _clean(cmd)
    if not cmd:
        return False
    try:
        bashlex.parse(cmd)
        return True
    except bashlex.errors.ParsingError:  # bashlex also refuses `&&`, `||` and `&` inside `$( )`: a gap there
        bashlex_gap = "$(" in cmd
    except Exception:  # NotImplementedError, or an internal bashlex crash
        bashlex_gap = True
    ts_ok, unsupported = _ts_verdict(cmd)
    return ts_ok and (bashlex_gap or unsupported)


# ---------------------------------------------------------------- template
_FIND_ARITY = {"-" + k: 1 for k in (
    "name iname path ipath wholename iwholename regex iregex lname ilname type xtype mtime "
    "mmin atime amin ctime cmin size perm user group uid gid newer anewer cnewer inum links "
    "samefile fstype maxdepth mindepth regextype used printf fprint fprint0 fls context").split()}
_FIND_ARITY["-fprintf"] = 2
_FIND_EXEC = {"-exec", "-execdir", "-ok", "-okdir"}
_FIND_ACTIONS = {"-delete", "-print", "-print0", "-printf", "-fprint", "-fprint0", "-fprintf",
                 "-ls", "-fls", "-prune", "-quit", "-o", ","}
_FIND_ALIAS = {"-not": "!", "-or": "-o", "-and": None, "-a": None}
# wrapper -> (short option letters taking a separate argument, long options taking one, leading positionals)
_WRAPPERS = {"xargs": ("IdnPLsEa", {"arg-file", "delimiter", "max-args", "max-procs", "max-chars",
                                    "process-slot-var"}, 0),  # --max-lines, --eof: a value only with =
             "sudo": ("ugCpDhrtUTR", {"user", "group", "close-from", "prompt", "chdir", "host", "role", "type",
                                     "other-user", "chroot", "command-timeout"}, 0),
             "nohup": ("", set(), 0), "time": ("fo", {"format", "output"}, 0), "nice": ("n", {"adjustment"}, 0),
             "env": ("uC", {"unset", "chdir", "split-string"}, 0), "timeout": ("sk", {"signal", "kill-after"}, 1),
             "watch": ("n", {"interval"}, 0), "exec": ("a", set(), 0), "command": ("", set(), 0)}
_DASHLESS = {"tar", "ps", "ar"}  # `tar czf a b`: a first word of letters is a bundle of flags without its dash
_NEG_NUM = re.compile(r"-\d+(\.\d+)?")
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)
_FIND_OPS = ("(", ")", "!", ",")


def _arg(word) -> object:
    """Placeholder for an argument word: '_' or the templates of its substitutions."""
    subs = []
    for part in getattr(word, "parts", []):
        if part.kind == "commandsubstitution":
            subs.append(("$()", _node(part.command)))
        elif part.kind == "processsubstitution":
            start = word.word[max(0, part.pos[0] - word.pos[0]):][:1]
            subs.append((start + "()" if start in "<>" else "<()", _node(part.command)))
    return "_" if not subs else subs[0] if len(subs) == 1 else tuple(subs)


def _is_flag(text: str) -> bool:
    return len(text) > 1 and text[0] == "-"


def _split_flag(text: str) -> tuple[list[str], bool]:
    """Flag word -> (flags, has attached argument). `-la` -> -l -a, `-k2` -> -k + arg."""
    if _NEG_NUM.fullmatch(text):
        return ["-#"], False
    if text.startswith("--"):
        name, eq, _ = text.partition("=")
        return [name], bool(eq)
    digits, letters, rest = re.match(r"-(\d*)([A-Za-z]*)(.*)", text, re.S).groups()  # `-1t`: -# -t; `-0L2`: -# -L 2
    if digits and any(c.isspace() for c in text):  # a quoted value ("-1 days"), not a bundle of options
        return [], True
    if digits and not letters:
        return ["-#"], bool(rest)
    return ["-#"] * bool(digits) + ["-" + c for c in letters], bool(rest)


def _takes_arg(flag: str, short: str, long: set[str]) -> bool:
    return flag[2:] in long if flag.startswith("--") else flag[1:] in short and len(flag) == 2


def _options(words, takes_arg: str = "", lead: int = 0, wrapper: bool = False, long_args: set[str] = frozenset(),
             shell_string: bool = False):
    """Generic option parsing; a wrapper's first free positional starts its sub-command."""
    flags, args, i, dashdash = [], [], 0, False
    while i < len(words):
        text = words[i].word
        if text == "--" and not dashdash:
            flags.append("--")
            dashdash = True
        elif _is_flag(text) and not dashdash:
            names, attached = _split_flag(text)
            flags += names
            if attached:
                args.append(_arg(words[i]))
            elif names and _takes_arg(names[-1], takes_arg, long_args) and i + 1 < len(words):
                i += 1
                args.append(_arg(words[i]))
        elif wrapper and lead <= 0 and not _ASSIGN.fullmatch(text):
            args.append(_simple(words[i:], shell_string=shell_string))  # watch runs its words through sh -c
            break
        else:
            lead -= 1
            args.append(_arg(words[i]))
        i += 1
    return flags, args


def _find_exec(words, i):
    """Sub-command of -exec starting at words[i] -> (template, next index, terminated)."""
    j = i
    while j < len(words):
        text = words[j].word
        if text == ";" or (text == "+" and j > i and words[j - 1].word == "{}"):
            return (_simple(words[i:j]) if j > i else None), j + 1, True
        j += 1
    return (_simple(words[i:]) if words[i:] else None), j, False


def _sort_tests(expr):
    """Bind `!` to the test it negates, then sort runs of side-effect-free tests."""
    units, out, run = [], [], []
    for item in expr:
        if units and units[-1] == "!" and isinstance(item, str) and _is_test(item):
            units[-1] = ("!", item)
        else:
            units.append(item)
    for unit in units + [None]:
        if unit is not None and (isinstance(unit, tuple) and unit[0] == "!" or _is_test(unit)):
            run.append(unit)
            continue
        out += sorted(run, key=repr)
        run = []
        if unit is not None:
            out.append(unit)
    return out


def _is_test(item) -> bool:
    return isinstance(item, str) and item.startswith("-") and item not in _FIND_ACTIONS


def _find(words):
    flags, args, expr, i = [], [], [], 0
    while i < len(words) and words[i].word in ("-H", "-L", "-P"):
        flags.append(words[i].word)
        i += 1
    while i < len(words) and not (_is_flag(words[i].word) or words[i].word in _FIND_OPS):
        args.append(_arg(words[i]))
        i += 1
    while i < len(words):
        text = _FIND_ALIAS.get(words[i].word, words[i].word)
        i += 1
        if text is None:
            continue
        if text in _FIND_EXEC:
            sub, i, done = _find_exec(words, i)
            expr.append((text, sub) if done else (text, sub, "unterminated"))
        elif text in _FIND_ARITY or re.fullmatch(r"-newer[aBcmt][aBcmt]t?", text):
            expr.append(text)
            i += _FIND_ARITY.get(text, 1)
        elif _is_flag(text) or text in _FIND_OPS:
            expr.append(text)
        else:
            expr.append(_arg(words[i - 1]))
    return flags + _sort_tests(expr), args


def _simple(words, extras=(), shell_string: bool = False) -> tuple:
    head = words[0]
    if getattr(head, "parts", None):
        name = _arg(head)
    elif shell_string and any(c.isspace() for c in head.word):  # `watch "tail f | grep x"`: a command in a word
        name = template(head.word) or "_"
    else:
        name = os.path.basename(head.word) or head.word
    rest, bundle = words[1:], []
    if name in _DASHLESS and rest and re.fullmatch(r"[A-Za-z]+", rest[0].word):
        bundle, rest = ["-" + c for c in rest[0].word], rest[1:]
    if name == "find":
        flags, args = _find(rest)
    elif name in _WRAPPERS:
        takes_arg, long_args, lead = _WRAPPERS[name]
        flags, args = _options(rest, takes_arg, lead, wrapper=True, long_args=long_args, shell_string=name == "watch")
        flags.sort()
    else:
        flags, args = _options(rest)
        flags = sorted(bundle + flags)
    return ("cmd", name, tuple(flags), tuple(args), tuple(extras))


def _redirect(node) -> tuple:
    fd = getattr(node, "input", None)
    target = node.output
    return (("" if fd is None else str(fd)) + node.type,
            str(target) if isinstance(target, int) else _arg(target))


def _command(node) -> tuple:
    words = [p for p in node.parts if p.kind == "word"]
    extras = [_redirect(p) if p.kind == "redirect" else ("=", _arg(p))
              for p in node.parts if p.kind in ("redirect", "assignment")]
    if not words:
        return ("cmd", "=", (), (), tuple(extras))
    return _simple(words, extras)


def _node(node) -> object:
    kind = node.kind
    if kind == "command":
        return _command(node)
    if kind in ("operator", "pipe", "reservedword"):
        text = getattr(node, "op", None) or getattr(node, "pipe", None) or node.word
        return ";" if text == "\n" else text
    if kind in ("word", "assignment"):
        return _arg(node)
    if kind == "redirect":
        return _redirect(node)
    parts = node.list if kind == "compound" else node.parts
    items = [_node(p) for p in parts] + [_redirect(r) for r in getattr(node, "redirects", [])]
    if kind in ("list", "pipeline"):
        while len(items) > 1 and items[-1] == ";":
            items.pop()
        if len(items) == 1:
            return items[0]
    elif kind == "compound" and len(items) == 1:
        return items[0]
    items = [i for i in items if i != ";" or kind in ("list", "pipeline")]
    return tuple(items) if items and items[0] == kind else (kind,) + tuple(items)


def _rewrite(cmd: str) -> str:
    """Bridge bashlex gaps: `time` keyword -> utility, `$((...))` -> a plain argument."""
    cmd = re.sub(r"(^|[;&|({!]\s*)time\b", r"\1\\time", cmd)
    while (start := cmd.find("$((")) >= 0:
        depth, j = 0, start + 1
        while j < len(cmd):
            depth += {"(": 1, ")": -1}.get(cmd[j], 0)
            if depth == 0:
                break
            j += 1
        if depth != 0:  # unclosed: no plain argument stands for it, so the command keeps failing to parse
            break
        cmd = cmd[:start] + "0" + cmd[j + 1:]
    return cmd


def template(cmd: str) -> tuple | None:
    """Template of a command (see module docstring), or None if bashlex cannot parse it."""
    cmd = _clean(cmd)
    for text in (cmd, _rewrite(cmd)):
        try:
            trees = bashlex.parse(text)
        except Exception:
            continue
        nodes = [_node(t) for t in trees]
        if len(nodes) == 1:
            return nodes[0]
        return ("list",) + tuple(x for n in nodes for x in (n, ";"))[:-1]
    return None


def template_match(pred: str, ref: str) -> bool:
    """True iff both commands parse and have equal templates."""
    a, b = template(pred), template(ref)
    return a is not None and b is not None and a == b
