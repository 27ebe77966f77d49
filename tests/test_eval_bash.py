"""Hand-worked checks of the Bash metrics: validity and NL2Bash-style template match."""
from __future__ import annotations

import pytest

from codefusion.eval.bash import is_valid, template, template_match

VALID = [
    "ls -la /tmp",
    "find . -name '*.py' -exec rm {} \\;",
    "find . -name '*.py' -exec rm {} +",
    "find . -name '*.py' -exec rm {}",  # find would fail at run time, but the syntax is fine
    "cat a | grep -v b | wc -l && echo done || echo fail; ls &",
    "echo $(date +%s) `pwd` > out 2>&1",
    "for f in *.txt; do mv \"$f\" \"$f.bak\"; done",
    "time find . -type f | wc -l",  # bashlex: NotImplementedError -> tree-sitter decides
    "echo $((1 + 2))",
    "[[ -f x ]] && echo yes",  # bashlex rejects [[ ]], tree-sitter accepts
    "case $x in a) ls;; esac",
    "find -inum 804180 -exec rm {} \\",  # trailing backslash: bash accepts it at EOF
]

INVALID = [
    "",
    "echo 'unbalanced",
    'grep "foo bar file.txt',
    "echo $(ls",
    "(cd /tmp && ls",
    "ls )",
    "find . -name '*.py' | | wc -l",
    "done mkdir -p x",  # tree-sitter alone accepts this
    "find . -type f ;; -mtime +7",  # tree-sitter alone accepts this
    'print("hello")',  # a Python call: tree-sitter accepts it, bashlex and bash do not
    "[[ -f x ]] && done ls",  # bashlex cannot judge [[ ]]; tree-sitter misses the stray `done`
    "time ls ;; wc",  # bashlex cannot judge `time`; tree-sitter misses the stray `;;`
    "if true; then ls",
    "du -s <file>",
]


@pytest.mark.parametrize("cmd", VALID)
def test_valid(cmd):
    assert is_valid(cmd)


@pytest.mark.parametrize("cmd", ["echo $(a || b)", "x=$(cat f || echo none)", "echo $(make && make install)"])
def test_lists_inside_command_substitution_are_valid(cmd):
    """bashlex refuses `&&`, `||` and `&` inside `$( )` (bash -n accepts them): tree-sitter decides there."""
    assert is_valid(cmd) and not is_valid(cmd.replace(")", "", 1))


@pytest.mark.parametrize("cmd", INVALID)
def test_invalid(cmd):
    assert not is_valid(cmd)


MATCH = [
    ("find . -name '*.py' -mtime -1", 'find /home -name "*.txt" -mtime +7'),
    ("ls -la /tmp", "ls -l -a /var"),
    ("ls -la /tmp", "ls -al /var"),
    ("find . -exec rm {} \\;", "find /x -exec rm '{}' +"),
    ("grep 'a b' f.txt", 'grep "c" g.txt'),
    ("find . -type f -name x", "find . -name y -type f"),
    ("find . -not -name x", "find . ! -name y"),
    ("cat a | sort -k2 | uniq -c", "cat b | sort -k 3 | uniq -c"),
    ("echo $(pwd)", "echo `pwd`"),
    ("ls 2>/dev/null", "ls 2> err.log"),
    ("find . -name x -o -name y", "find . -name a -or -name b"),
    ("/bin/rm -rf x", "rm -fr y"),
    ("head -5 f", "head -10 g"),
    ("xargs -I {} mv {} /x", "xargs -I{} mv {} /y"),
    ("cut --delimiter=: -f1 f", "cut --delimiter , -f 2 g"),
    ("ls -1t", "ls -1 -t"),  # a bundle that starts with a digit keeps its letters
    ("xargs -0i cp x {}", "xargs -0 -i cp y {}"),
    ("tar xzf a.tgz", "tar -xzf b.tgz"),  # tar/ps/ar: a dashless first word is a bundle of flags
    ('watch "tail file | grep pattern"', "watch 'tail x | grep y'"),  # a command in one quoted word is templated
    ("timeout --signal KILL 5 sleep 9", "timeout --signal TERM 2 sleep 1"),
    ('date -d "-1 days"', "date -d yesterday"),  # a quoted value that starts with -1 is no option bundle
    ("sudo -R /srv rm x", "sudo -R /a rm y"),  # -R takes its directory  # a wrapper's long option takes its value
]

NO_MATCH = [
    ("ls -l /tmp", "ls -a /tmp"),  # different flag
    ("cat f | wc -l", "wc -l f"),  # pipe vs no pipe
    ("cat f | wc -l", "cat f && wc -l"),
    ("find . -name x", "find . -iname x"),
    ("find . -exec rm {} \\;", "find . -exec rm {}"),  # missing terminator
    ("find . -exec rm {} \\;", "find . -execdir rm {} \\;"),
    ("find . -exec rm {} \\;", "find . -exec rm -f {} \\;"),
    ("ls /tmp", "ls /tmp /var"),  # argument count is part of the template
    ("ls", "ls > out"),
    ("ls 2>/dev/null", "ls >/dev/null"),
    ("echo $(pwd)", "echo $(date)"),
    ("sudo rm x", "rm x"),
    ("xargs rm", "xargs rm -f"),
    ("find . -name x -delete", "find . -delete -name x"),  # action order matters
    ("find . -name x -o -type f", "find . -name x -type f"),
    ("ls", "echo 'unbalanced"),  # unparsable -> no match
    ("ls -1t", "ls x"),
    ("tar czf a b", "tar xzf a b"),  # create is not extract
    ("ps aux", "ps ef"),
    ("watch -n 1 'ls /tmp'", "watch -n 1 'du /tmp'"),  # not the basename of the quoted string
    ("sudo --user bob rm x", "sudo --user bob ls x"),  # the sub-command is rm/ls, not bob
    ("xargs --max-lines rm", "xargs --max-lines ls"),  # --max-lines takes a value only with =
    ('"/opt/My App/run" x', '"/usr/My App/other" x'),  # a quoted path is a command name, not a command
]


@pytest.mark.parametrize("pred,ref", MATCH)
def test_template_match(pred, ref):
    assert template_match(pred, ref)


@pytest.mark.parametrize("pred,ref", NO_MATCH)
def test_template_no_match(pred, ref):
    assert not template_match(pred, ref)


def test_unparsable_has_no_template():
    assert template("echo 'unbalanced") is None
    assert template("(cd x; ls") is None
    assert not template_match("echo 'x", "echo 'x")
    for broken in ("echo $((1 +", "ls -l $(( | grep x ; )", "wc -l $(( ( ))"):  # unclosed $((: not bridged
        assert template(broken) is None and not template_match(broken, broken.split(" $")[0] + " x")


RM = ("cmd", "rm", (), ("_",), ())
EXACT = [
    ("find . -name \"*.py\" -mtime -1", ("cmd", "find", ("-mtime", "-name"), ("_",), ())),
    ("ls -la /tmp", ("cmd", "ls", ("-a", "-l"), ("_",), ())),
    ("find . -type f -exec rm {} \\; 2>/dev/null | wc -l",
     ("pipeline",
      ("cmd", "find", ("-type", ("-exec", RM)), ("_",), (("2>", "_"),)),
      "|",
      ("cmd", "wc", ("-l",), (), ()))),
    ("find /tmp ! -name x \\( -perm -111 -o -size +1M \\) -print",
     ("cmd", "find", (("!", "-name"), "(", "-perm", "-o", "-size", ")", "-print"), ("_",), ())),
    ("echo `pwd` > f && sudo -u bob xargs -0 rm",
     ("list",
      ("cmd", "echo", (), (("$()", ("cmd", "pwd", (), (), ())),), ((">", "_"),)),
      "&&",
      ("cmd", "sudo", ("-u",),
       ("_", ("cmd", "xargs", ("-#",), (("cmd", "rm", (), (), ()),), ())), ()))),
    ("diff <(ls a) <(ls b) 2>&1",
     ("cmd", "diff", (), (("<()", ("cmd", "ls", (), ("_",), ())),) * 2, (("2>&", "1"),))),
    ("x=$(pwd); (cd x; ls) &",
     ("list", ("cmd", "=", (), (), (("=", ("$()", ("cmd", "pwd", (), (), ()))),)), ";",
      ("compound", "(", ("list", ("cmd", "cd", (), ("_",), ()), ";", ("cmd", "ls", (), (), ())),
       ")"), "&")),
    ("for f in *.txt; do mv \"$f\" x; done",
     ("for", "_", "in", "_", "do", ("cmd", "mv", (), ("_", "_"), ()), "done")),
]


@pytest.mark.parametrize("cmd,expected", EXACT)
def test_template_exact(cmd, expected):
    assert template(cmd) == expected


def test_time_keyword_and_arithmetic_are_bridged():
    assert template("time ls -l") == ("cmd", "time", (), (("cmd", "ls", ("-l",), (), ()),), ())
    assert template("head -n $((1+2)) f") == ("cmd", "head", ("-n",), ("_", "_"), ())


# --- destructive(): what a generated command would destroy -------------------------------------------------

DESTRUCTIVE = [
    ("find . -mtime -1 -exec rm {} \\;", ["rm deletes files"]),  # the default model's answer to the README demo
    ("rm -rf /tmp/x", ["rm deletes files"]),
    ("ls | xargs rm", ["rm deletes files"]),
    ("find . -name '*.log' -delete", ["find -delete deletes files"]),
    ("sudo dd if=/dev/zero of=/dev/sda", ["dd writes raw blocks"]),
    ("mkfs.ext4 /dev/sdb1", ["mkfs formats a file system"]),
    ("ps aux | grep x | awk '{print $2}' | xargs kill -9", ["kill stops processes"]),
    ("echo $(rm a) && rmdir b; rm c", ["rm deletes files", "rmdir deletes directories"]),  # each once, in order
    ("rm \"unclosed", ["rm deletes files"]),  # bashlex cannot parse it: scanned word by word
    ("sh -c 'rm -rf x'", ["rm deletes files"]),  # a shell string is one word to the template: scanned too
    ("find . -exec sh -c 'rm \"$1\"' _ {} \\;", ["rm deletes files"]),
    ("sudo --user root rm x", ["rm deletes files"]),  # a long option with a value the template does not unwrap
    ("parallel kill ::: 1 2", ["kill stops processes"]),
    ("$(which rm) -rf /tmp/x", ["rm deletes files"]),  # a command named by a substitution: scanned
    ("`which rm` -rf x", ["rm deletes files"]),
    ("ssh host rm -rf /data", ["rm deletes files"]),  # a remote command is one more indirection
]
HARMLESS = ["ls -l", "grep rm file.txt", "echo rm", "find . -name '*.rm' | wc -l", "git rm --cached x",
            "cat form.txt", "echo hi > f.txt", "find . -mtime -1 -print", "sort -u a | uniq -c"]


@pytest.mark.parametrize("cmd,expected", DESTRUCTIVE)
def test_destructive(cmd, expected):
    from codefusion.eval.destructive import destructive
    assert destructive(cmd) == expected


@pytest.mark.parametrize("cmd", HARMLESS)
def test_not_destructive(cmd):
    from codefusion.eval.destructive import destructive
    assert destructive(cmd) == []
