"""CF rule grammar and interpreter (codefusion.eval.cf): hand-worked examples on tiny tables."""
import pytest

from codefusion.eval.cf import (CellRef, CFExecError, CFSyntaxError, Node, Num, Text, exec_match,
                                execute, is_valid, parse, reference_executes)

# numbers as the cells see them: 5, 12, text->0, blank->0, 12, -3
NUM = [["Index", "Value"], [0, "5"], [1, "12"], [2, "abc"], [3, ""], [4, "12"], [5, "-3"]]
TXT = [["Index", "Value", "Score"], [0, "Apple pie", 7], [1, "apple", 8], [2, "Banana", 9],
       [3, "12.5", 1], [4, True, 2], [5, "", 3]]


# -- parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,tree", [
    ("GreaterThan(0)", Node("GreaterThan", (Num(0.0),))),
    ("LessThan(-5251.47)", Node("LessThan", (Num(-5251.47),))),
    ("Between(1, 5)", Node("Between", (Num(1.0), Num(5.0)))),
    ("top(10%)", Node("top", (10, True))),
    ("Top(3)", Node("top", (3, False))),
    ("bottom(1)", Node("bottom", (1, False))),
    ("Duplicate()", Node("Duplicate")),
    ("aboveAverage()", Node("aboveAverage")),
    ("TextContains(Non-pooled, en)", Node("TextContains", (Text("Non-pooled, en"),))),
    ("TextContains(RT (Retaken))", Node("TextContains", (Text("RT (Retaken)"),))),
    ("TextContains(()", Node("TextContains", (Text("("),))),
    ("TextEquals( )", Node("TextEquals", (Text(" "),))),
    ("TextEquals()", Node("TextEquals", (Text(""),))),
    ('TextEquals("a""b")', Node("TextEquals", (Text('a"b'),))),
    ("GreaterThan($E$13)", Node("GreaterThan", (CellRef("$E$13"),))),
    ("GreaterThan(13 Days)", Node("GreaterThan", (Text("13 Days"),))),
    ("NOT(Blanks())", Node("NOT", (Node("Blanks"),))),
    ("OR(TextEquals(p), TextEquals(ul))",
     Node("OR", (Node("TextEquals", (Text("p"),)), Node("TextEquals", (Text("ul"),))))),
    ("AND(GreaterThan(0),OR(LessThan(1),GreaterThan(9)))",
     Node("AND", (Node("GreaterThan", (Num(0.0),)),
                  Node("OR", (Node("LessThan", (Num(1.0),)), Node("GreaterThan", (Num(9.0),))))))),
])
def test_parse_trees(rule, tree):
    assert parse(rule) == tree


@pytest.mark.parametrize("rule", [
    "GreaterThanEqual(25)", "LessThanEqual(1.5)", "NotEquals(0)", "Equals(1E-3)", "Errors()",
    "ColorScale()", "DataBar()", "IconSet()", "belowAverage()", "TextStartsWith(partial)",
    "TextEquals(Y(SH))", "TextContains(#DIV/0!)", 'AND(NOT(TextEquals("")),GreaterThan(0))',
    "greaterthan(5)", "TOP(1)", "  AND( GreaterThan(0) , LessThan(10) )  ", "top(100%)",
])
def test_valid_rules(rule):
    assert is_valid(rule)


@pytest.mark.parametrize("rule", [
    "", "   ", "GreaterThan(", "GreaterThan", "AND(GreaterThan(1)", "Foo(1)", "LessThan()",
    "LessThan(1, 2)", "Between(1)", "Between(1, 2, 3)", "GreaterThan(1))", "GreaterThan(1) x",
    "top(0)", "top(1.5)", "top(101%)", "top()", "Duplicate(1)", "Duplicate", "OR()",
    "NOT(GreaterThan(1), LessThan(2))", "TextContains(abc", "greater than 5",
    'GreaterThan("abc)', "(GreaterThan(1))", "GreaterThan(1)GreaterThan(2)",
    "TextEndsWith(a)", "Unique()", "AND(,GreaterThan(1))",
])
def test_invalid_rules(rule):
    assert not is_valid(rule)
    with pytest.raises(CFSyntaxError):
        parse(rule)


def test_syntax_error_says_where_and_what():
    with pytest.raises(CFSyntaxError) as err:
        parse("AND(GreaterThan(1)")
    assert err.value.pos == 18
    assert "expected ')'" in str(err.value) and "end of rule" in str(err.value)
    with pytest.raises(CFSyntaxError) as err:
        parse("Foo(1)")
    assert err.value.pos == 0 and "unknown function 'Foo'" in str(err.value)
    with pytest.raises(CFSyntaxError) as err:
        parse("GreaterThan(1) x")
    assert err.value.pos == 15 and "trailing" in str(err.value)
    assert isinstance(err.value, ValueError)


# -- numeric families ------------------------------------------------------------------------
@pytest.mark.parametrize("rule,labels", [
    ("GreaterThan(5)", [0, 0, 1, 0, 0, 1, 0]),
    ("GreaterThanEqual(5)", [0, 1, 1, 0, 0, 1, 0]),
    ("LessThan(0)", [0, 0, 0, 0, 0, 0, 1]),
    ("LessThanEqual(0)", [0, 0, 0, 1, 1, 0, 1]),   # text and blank count as 0
    ("Equals(12)", [0, 0, 1, 0, 0, 1, 0]),
    ("NotEquals(12)", [0, 1, 0, 1, 1, 0, 1]),
    ("Equals(0)", [0, 0, 0, 1, 1, 0, 0]),
    ("Between(0, 6)", [0, 1, 0, 1, 1, 0, 0]),
    ("Between(6, 0)", [0, 1, 0, 1, 1, 0, 0]),       # bounds in either order
    ("top(2)", [0, 0, 1, 0, 0, 1, 0]),              # ties at the cut-off are kept
    ("top(3)", [0, 1, 1, 0, 0, 1, 0]),
    ("top(50%)", [0, 1, 1, 0, 0, 1, 0]),            # floor(6 * 50%) = 3
    ("top(10%)", [0, 0, 1, 0, 0, 1, 0]),            # floor(0.6) -> at least 1
    ("bottom(2)", [0, 1, 1, 1, 1, 1, 1]),           # <= 2nd largest (benchmark labelling)
    ("bottom(3)", [0, 1, 0, 1, 1, 0, 1]),
    ("aboveAverage()", [0, 0, 1, 0, 0, 1, 0]),      # mean of numbers = 26 / 4 = 6.5
    ("belowAverage()", [0, 1, 0, 1, 1, 0, 1]),
    ("Duplicate()", [0, 1, 1, 1, 1, 0, 1]),         # first occurrence of each value
    ("ColorScale()", [0, 1, 1, 1, 1, 1, 1]),
    ("AND(GreaterThan(0), LessThan(10))", [0, 1, 0, 0, 0, 0, 0]),
    ("OR(LessThan(0),Equals(12))", [0, 0, 1, 0, 0, 1, 1]),
    ("NOT(GreaterThan(5))", [0, 1, 0, 1, 1, 0, 1]),
])
def test_numeric_rules(rule, labels):
    assert execute(rule, NUM) == labels


# -- text families ---------------------------------------------------------------------------
@pytest.mark.parametrize("rule,labels", [
    ("TextContains(apple)", [0, 1, 1, 0, 0, 0, 0]),       # case-insensitive
    ("TextContains(2.5)", [0, 0, 0, 0, 1, 0, 0]),         # number cells as written
    ("TextEquals(APPLE)", [0, 0, 1, 0, 0, 0, 0]),
    ("TextEquals(true)", [0, 0, 0, 0, 0, 1, 0]),          # boolean cell reads TRUE
    ('TextEquals("")', [0, 0, 0, 0, 0, 0, 1]),
    ("TextEquals()", [0, 0, 0, 0, 0, 0, 1]),
    ("TextStartsWith(ban)", [0, 0, 0, 1, 0, 0, 0]),
    ("NOT(TextContains(a))", [0, 0, 0, 0, 1, 1, 1]),
    ("OR(TextEquals(banana), TextEquals(12.5))", [0, 0, 0, 1, 1, 0, 0]),
    ("Duplicate()", [0, 1, 1, 1, 1, 1, 1]),               # Apple pie / apple differ
])
def test_text_rules(rule, labels):
    assert execute(rule, TXT) == labels


def test_errors_and_degenerate_tables():
    table = [["Index", "Value"], [0, "#N/A"], [1, "N/A"], [2, 3]]
    assert execute("Errors()", table) == [0, 1, 0, 0]
    assert execute("GreaterThan(2)", table) == [0, 0, 0, 1]
    assert execute("top(1)", [["Index", "Value"]]) == [0]
    assert execute("Duplicate()", [["Index", "Value"]]) == [0]


def test_execute_errors():
    with pytest.raises(CFSyntaxError):
        execute("Foo(1)", NUM)
    with pytest.raises(CFExecError):
        execute("GreaterThan($E$13)", NUM)        # the sheet is not available
    with pytest.raises(CFExecError):
        execute("GreaterThan(1)", [])
    with pytest.raises(CFExecError):
        execute("GreaterThan(1)", [["Index", "Value"], [0]])
    with pytest.raises(CFExecError):
        execute("GreaterThan(1)", [["Index", "Value"], [0, {"x": 1}]])


def test_exec_match_and_reference_executes():
    gold = [0, 0, 1, 0, 0, 1, 0]
    assert exec_match("GreaterThan(5)", NUM, gold)
    assert exec_match("Equals(12)", NUM, gold)             # other program, same labels
    assert exec_match("top(2)", NUM, gold)
    assert not exec_match("GreaterThan(4)", NUM, gold)
    assert not exec_match("GreaterThan(5", NUM, gold)      # syntax error -> False
    assert not exec_match("GreaterThan($A$1)", NUM, gold)  # exec error -> False
    assert not exec_match("GreaterThan(5)", NUM, gold[:-1])
    assert reference_executes("top(2)", NUM, gold)
    assert not reference_executes("bottom(2)", NUM, gold)
