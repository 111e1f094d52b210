"""PostgreSQL's scalar functions on DuckDB: the calls whose meaning or result type differs.

Place in the data flow: the parser (``sql.dialect``) keeps ``TO_CHAR``, ``date_part`` and
``MOD`` as plain calls (``CALLS_KEPT_BY_THE_PARSER``; sqlglot would rewrite them, losing the
format text of ``TO_CHAR``), and ``common.sqltext.to_duckdb`` runs :func:`translate_functions`
on every expression before it becomes DuckDB SQL. Views (the stream evaluator) and SELECTs
(the batch engine) both go through ``to_duckdb``, so a function means the same in both.

What changes, and why:

- ``TO_CHAR(timestamp, 'template')``: PostgreSQL's template patterns become ``strftime``
  pieces joined with ``||``; ``Month`` and ``Day`` are blank-padded to 9 characters, ``FM``
  drops padding and leading zeros, the case of a name pattern is the case of its output.
- ``EXTRACT(field FROM x)`` is ``numeric`` (PostgreSQL 14 and later): whole fields have scale
  0, ``SECOND`` and ``EPOCH`` scale 6, ``MILLISECONDS`` scale 3. DuckDB's own EXTRACT returns
  whole seconds as ``bigint``. ``date_part('field', x)`` is the same value as ``double``.
- ``MOD(a, b)`` is ``a % b`` (both take the sign of the dividend); ``LENGTH`` is ``integer``.
- ``regexp_match(string, pattern [, flags])`` is the ``text[]`` of the capture groups (the
  whole match for a pattern without groups), NULL without a match; ``(regexp_match(…))[k]``
  with a constant ``k`` extracts one group directly. The flags become RE2 inline flags:
  ``.`` matches a newline unless the match is newline-sensitive, as in PostgreSQL.
- ``split_part`` with an empty delimiter returns the whole string for field 1 or -1;
  field 0 is an error (22023).
- Arrays: a subscript below 1 is NULL (DuckDB counts ``a[-1]`` from the end);
  ``array_length(a, 1)``, ``array_upper(a, 1)`` and ``array_lower(a, 1)`` are NULL for an
  empty array and for any other dimension; they and ``cardinality(a)`` are ``integer``.

Translations see only the syntax tree, not the argument types, so they are written so that
DuckDB's binder still rejects the argument types PostgreSQL rejects (``LOWER(1)``,
``TO_CHAR('text', …)``): those are ``undefined_function`` (42883), as in PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from tidegate.errors import FeatureNotSupported, InvalidParameterValue, UndefinedFunction

__all__ = ["CALLS_KEPT_BY_THE_PARSER", "postgres_function_message", "translate_functions"]


def _kept(name: str) -> Callable[[list[exp.Expression]], exp.Expression]:
    def build(args: list[exp.Expression]) -> exp.Expression:
        return exp.Anonymous(this=name, expressions=args)

    return build


# Calls the parser must leave as written (upper-case names, as sqlglot's FUNCTIONS table keys them).
CALLS_KEPT_BY_THE_PARSER: dict[str, Callable[[list[exp.Expression]], exp.Expression]] = {
    "TO_CHAR": _kept("to_char"),
    "DATE_PART": _kept("date_part"),
    "MOD": _kept("mod"),
}


def translate_functions(expression: exp.Expression) -> exp.Expression:
    """``expression`` with PostgreSQL calls rewritten for DuckDB (innermost calls first)."""
    root = expression
    # Reversed pre-order visits every node after its descendants, so arguments are translated first.
    for node in reversed(list(expression.walk(bfs=False))):
        if not isinstance(node, exp.Expression):
            continue
        replacement = _translate(node)
        if replacement is node:
            continue
        if node is root:
            root = replacement
        else:
            node.replace(replacement)
    return root


def _translate(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Anonymous):
        translator = _CALLS.get(str(node.this).lower())
        return translator(node) if translator is not None else node
    if isinstance(node, exp.Extract):
        return _extract(node)
    if isinstance(node, exp.Length):
        return exp.cast(exp.Length(this=node.this.copy()), exp.DataType.build("INT"))
    if isinstance(node, exp.SplitPart):
        return _split_part(node)
    if isinstance(node, exp.Bracket):
        translated = _subscripted_regexp_match(node)
        return _array_subscript(node) if translated is node else translated
    if isinstance(node, exp.ArraySize):  # what sqlglot reads array_length(a, dim) as
        dimension = node.args.get("expression")
        if dimension is None:
            raise UndefinedFunction("function array_length(anyarray) does not exist", hint="Write array_length(a, 1).")
        return _dimension_bound(node.this, dimension, _call("array_length", node.this.copy()))
    return node


def _arguments(call: exp.Anonymous, name: str, counts: tuple[int, ...]) -> list[exp.Expression]:
    args = list(call.expressions)
    if len(args) not in counts:
        raise UndefinedFunction(
            f"function {name}() with {len(args)} argument{'s' if len(args) != 1 else ''} does not exist",
            hint=f"{name} takes {' or '.join(str(c) for c in counts)} arguments.",
        )
    return args


def _constant_text(node: exp.Expression, what: str) -> str | None:
    """The text of a string literal (None for NULL); anything else is not supported."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    if isinstance(node, exp.Null) or (isinstance(node, exp.Cast) and isinstance(node.this, exp.Null)):
        return None
    raise FeatureNotSupported(f"{what} must be a constant string")


def _constant_int(node: exp.Expression) -> int | None:
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and node.this.is_int:
        return -int(node.this.this)
    return None


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _operand(node: exp.Expression) -> exp.Expression:
    """A copy of ``node`` to put under an operator: parenthesized unless it is atomic."""
    copy = node.copy()
    atomic = isinstance(copy, exp.Column | exp.Literal | exp.Paren | exp.Func | exp.Null | exp.Boolean)
    return copy if atomic else exp.Paren(this=copy)


def _null_text() -> exp.Expression:
    return exp.cast(exp.null(), exp.DataType.build("VARCHAR"))


# ---- MOD -------------------------------------------------------------------------------


def _mod(call: exp.Anonymous) -> exp.Expression:
    dividend, divisor = _arguments(call, "mod", (2,))
    # Parenthesized: the generator does not add parentheses around a node it did not parse.
    return exp.Paren(this=exp.Mod(this=_operand(dividend), expression=_operand(divisor)))


# ---- EXTRACT and date_part -----------------------------------------------------------------

# Every spelling PostgreSQL accepts for a field, to the field's canonical name.
_FIELD_SPELLINGS = {
    **dict.fromkeys(("year", "years", "y", "yr", "yrs"), "year"),
    **dict.fromkeys(("month", "months", "mon", "mons"), "month"),
    **dict.fromkeys(("day", "days", "d"), "day"),
    **dict.fromkeys(("hour", "hours", "h", "hr", "hrs"), "hour"),
    **dict.fromkeys(("minute", "minutes", "m", "min", "mins"), "minute"),
    **dict.fromkeys(("second", "seconds", "s", "sec", "secs"), "second"),
    **dict.fromkeys(("millisecond", "milliseconds", "ms", "msec", "msecs", "mseconds"), "milliseconds"),
    **dict.fromkeys(("microsecond", "microseconds", "us", "usec", "usecs", "useconds"), "microseconds"),
    **dict.fromkeys(("dow", "dayofweek"), "dow"),
    **dict.fromkeys(("doy", "dayofyear"), "doy"),
    **dict.fromkeys(("week", "weeks", "w"), "week"),
    **dict.fromkeys(("quarter", "qtr"), "quarter"),
    **dict.fromkeys(("decade", "decades", "dec", "decs"), "decade"),
    **dict.fromkeys(("century", "centuries", "c", "cent"), "century"),
    **dict.fromkeys(("millennium", "millennia", "millenniums", "mil", "mils"), "millennium"),
    "isodow": "isodow",
    "isoyear": "isoyear",
    "epoch": "epoch",
}
# Whole-number fields: DuckDB's date_part part of the same name and meaning.
_WHOLE_FIELDS = {
    "year", "month", "day", "hour", "minute", "dow", "isodow", "doy", "week", "quarter", "decade", "century",
    "millennium", "isoyear",
}  # fmt: skip
_UNSUPPORTED_FIELDS = {"julian", "timezone", "timezone_hour", "timezone_minute"}


def _field(name: str) -> str:
    lowered = name.lower()
    if lowered in _UNSUPPORTED_FIELDS:
        raise FeatureNotSupported(f'EXTRACT of field "{lowered}" is not supported yet')
    field = _FIELD_SPELLINGS.get(lowered)
    if field is None:
        raise InvalidParameterValue(f'unit "{lowered}" not recognized')
    return field


def _microseconds(source: exp.Expression) -> exp.Expression:
    """Seconds within the minute, in microseconds, as an exact decimal."""
    return exp.cast(
        _call("date_part", exp.Literal.string("microseconds"), source), exp.DataType.build("DECIMAL(18, 0)")
    )


def _scaled(micros: exp.Expression, factor: str, result: str) -> exp.Expression:
    # A decimal product is exact in DuckDB, where a decimal quotient goes through double.
    product = exp.Mul(this=micros, expression=exp.Literal.number(factor))
    return exp.cast(product, exp.DataType.build(result))


def _numeric_field(field: str, source: exp.Expression) -> exp.Expression:
    """PostgreSQL's ``EXTRACT(field FROM source)``: numeric with the field's scale."""
    if field in _WHOLE_FIELDS:
        return exp.cast(_call("date_part", exp.Literal.string(field), source), exp.DataType.build("DECIMAL(18, 0)"))
    if field == "microseconds":
        return _microseconds(source)
    if field == "milliseconds":
        return _scaled(_microseconds(source), "0.001", "DECIMAL(18, 3)")
    if field == "second":
        return _scaled(_microseconds(source), "0.000001", "DECIMAL(18, 6)")
    assert field == "epoch", field
    micros = exp.cast(_call("epoch_us", source.copy()), exp.DataType.build("DECIMAL(24, 0)"))
    # DuckDB's typeof is the argument's static type: the CASE picks one branch per call site.
    is_interval = exp.EQ(this=_call("typeof", source.copy()), expression=exp.Literal.string("INTERVAL"))
    return exp.Case(
        ifs=[exp.If(this=is_interval, true=_interval_epoch(source))],
        default=_scaled(micros, "0.000001", "DECIMAL(24, 6)"),
    )


def _interval_epoch(source: exp.Expression) -> exp.Expression:
    """An interval's seconds as PostgreSQL counts them: a year is 365.25 days, a month 30."""
    whole: exp.Expression = exp.Literal.number(0)
    for part, seconds in (("year", 31_557_600), ("month", 2_592_000), ("day", 86_400), ("hour", 3_600), ("minute", 60)):
        value = exp.cast(
            _call("date_part", exp.Literal.string(part), source.copy()), exp.DataType.build("DECIMAL(24, 0)")
        )
        whole = exp.Add(this=whole, expression=exp.Mul(this=value, expression=exp.Literal.number(seconds)))
    fraction = exp.Mul(this=_microseconds(source.copy()), expression=exp.Literal.number("0.000001"))
    return exp.cast(exp.Add(this=whole, expression=fraction), exp.DataType.build("DECIMAL(24, 6)"))


def _extract(node: exp.Extract) -> exp.Expression:
    return _numeric_field(_field(node.this.name), node.expression.copy())


def _date_part(call: exp.Anonymous) -> exp.Expression:
    field_text, source = _arguments(call, "date_part", (2,))
    name = _constant_text(field_text, "the field of date_part")
    if name is None:
        return exp.cast(exp.null(), exp.DataType.build("DOUBLE"))
    return exp.cast(_numeric_field(_field(name), source.copy()), exp.DataType.build("DOUBLE"))


# ---- TO_CHAR -------------------------------------------------------------------------------

# A piece of output: strftime text (with %-escapes) or an expression that yields text.
_Piece = str | exp.Expression
_PatternBuilder = Callable[[exp.Expression, bool], _Piece]


def _part_text(part: str, source: exp.Expression) -> exp.Expression:
    return exp.cast(_call("date_part", exp.Literal.string(part), source.copy()), exp.DataType.build("VARCHAR"))


def _strftime_number(spec: str, fill_mode: Callable[[exp.Expression], exp.Expression]) -> _PatternBuilder:
    """A zero-padded number strftime writes; FM writes it without leading zeros."""

    def build(source: exp.Expression, fill: bool) -> _Piece:
        return exp.cast(fill_mode(source.copy()), "VARCHAR") if fill else spec

    return build


def _part(name: str) -> Callable[[exp.Expression], exp.Expression]:
    return lambda source: _call("date_part", exp.Literal.string(name), source)


def _padded_part(part: str, width: int) -> _PatternBuilder:
    """A number strftime has no letter for, zero-padded to ``width`` unless FM."""

    def build(source: exp.Expression, fill: bool) -> _Piece:
        text = _part_text(part, source)
        return text if fill else _call("lpad", text, exp.Literal.number(width), exp.Literal.string("0"))

    return build


def _hour12(source: exp.Expression) -> exp.Expression:
    # 0 → 12, 13 → 1: ((hour + 11) % 12) + 1
    hour = _call("date_part", exp.Literal.string("hour"), source)
    shifted = exp.Paren(this=exp.Mod(this=exp.Paren(this=exp.Add(this=hour, expression=exp.Literal.number(11))),
                                     expression=exp.Literal.number(12)))  # fmt: skip
    return exp.Paren(this=exp.Add(this=shifted, expression=exp.Literal.number(1)))


def _fixed(spec: str) -> _PatternBuilder:
    return lambda _source, _fill: spec


def _name(spec: str, case: str, padded_width: int | None) -> _PatternBuilder:
    """Month or day names in the pattern's case; full names blank-padded unless FM or TM."""

    def build(source: exp.Expression, fill: bool) -> _Piece:
        padded = padded_width is not None and not fill
        if case == "capitalized" and not padded:
            return spec  # strftime writes the name capitalized
        text: exp.Expression = _call("strftime", source.copy(), exp.Literal.string(spec))
        if case == "upper":
            text = exp.Upper(this=text)
        elif case == "lower":
            text = exp.Lower(this=text)
        if padded:
            text = _call("rpad", text, exp.Literal.number(padded_width), exp.Literal.string(" "))
        return text

    return build


def _meridiem(before_noon: str, after_noon: str) -> _PatternBuilder:
    def build(source: exp.Expression, _fill: bool) -> _Piece:
        hour = _call("date_part", exp.Literal.string("hour"), source.copy())
        return exp.Case(
            ifs=[
                exp.If(this=exp.LT(this=hour, expression=exp.Literal.number(12)), true=exp.Literal.string(before_noon))
            ],
            default=exp.Literal.string(after_noon),
        )

    return build


def _last_year_digits(digits: int) -> _PatternBuilder:
    def build(source: exp.Expression, fill: bool) -> _Piece:
        year = _call("date_part", exp.Literal.string("year"), source.copy())
        text = exp.cast(exp.Paren(this=exp.Mod(this=year, expression=exp.Literal.number(10**digits))), "VARCHAR")
        return text if fill else _call("lpad", text, exp.Literal.number(digits), exp.Literal.string("0"))

    return build


def _seconds_past_midnight(source: exp.Expression, _fill: bool) -> _Piece:
    def part(name: str) -> exp.Expression:
        return _call("date_part", exp.Literal.string(name), source.copy())

    total = exp.Add(
        this=exp.Add(
            this=exp.Mul(this=part("hour"), expression=exp.Literal.number(3600)),
            expression=exp.Mul(this=part("minute"), expression=exp.Literal.number(60)),
        ),
        expression=part("second"),
    )
    return exp.cast(exp.Paren(this=total), "VARCHAR")


def _case_forms(builders: dict[str, _PatternBuilder]) -> dict[str, _PatternBuilder]:
    """Numeric patterns are written all upper or all lower case; both mean the same."""
    forms: dict[str, _PatternBuilder] = {}
    for pattern, builder in builders.items():
        forms[pattern] = builder
        forms[pattern.lower()] = builder
    return forms


_PATTERNS: dict[str, _PatternBuilder] = {
    **_case_forms(
        {
            "YYYY": _fixed("%Y"),
            "YYY": _last_year_digits(3),
            "YY": _last_year_digits(2),
            "Y": _last_year_digits(1),
            "IYYY": _fixed("%G"),
            "MM": _strftime_number("%m", _part("month")),
            "DDD": _strftime_number("%j", _part("doy")),
            "DD": _strftime_number("%d", _part("day")),
            "D": lambda source, _fill: exp.cast(
                exp.Paren(this=exp.Add(this=_call("dayofweek", source.copy()), expression=exp.Literal.number(1))),
                "VARCHAR",
            ),
            "ID": lambda source, _fill: _part_text("isodow", source),
            "IW": _strftime_number("%V", _part("week")),
            "Q": lambda source, _fill: _part_text("quarter", source),
            "CC": _padded_part("century", 2),
            "HH24": _strftime_number("%H", _part("hour")),
            "HH12": _strftime_number("%I", _hour12),
            "HH": _strftime_number("%I", _hour12),
            "MI": _strftime_number("%M", _part("minute")),
            "SS": _strftime_number("%S", _part("second")),
            "MS": _fixed("%g"),
            "US": _fixed("%f"),
            "SSSS": _seconds_past_midnight,
            "SSSSS": _seconds_past_midnight,
            "FX": _fixed(""),  # fixed-format matching: a to_timestamp option, nothing to write
        }
    ),
    **{
        pattern: _name(spec, case, width)
        for names, spec, width in (
            (("MONTH", "Month", "month"), "%B", 9),
            (("MON", "Mon", "mon"), "%b", None),
            (("DAY", "Day", "day"), "%A", 9),
            (("DY", "Dy", "dy"), "%a", None),
        )
        for pattern, case in zip(names, ("upper", "capitalized", "lower"))
    },
    "AM": _fixed("%p"),
    "PM": _fixed("%p"),
    "am": lambda source, _fill: exp.Lower(this=_call("strftime", source.copy(), exp.Literal.string("%p"))),
    "pm": lambda source, _fill: exp.Lower(this=_call("strftime", source.copy(), exp.Literal.string("%p"))),
    "A.M.": _meridiem("A.M.", "P.M."),
    "P.M.": _meridiem("A.M.", "P.M."),
    "a.m.": _meridiem("a.m.", "p.m."),
    "p.m.": _meridiem("a.m.", "p.m."),
}
# PostgreSQL patterns not translated yet: refused, so that they are never copied as literal text.
_UNSUPPORTED_PATTERNS = {
    form
    for pattern in ("Y,YYY", "IYY", "IY", "I", "IDDD", "J", "W", "WW", "RM", "TZH", "TZM", "TZ", "OF", "BC",
                    "AD", "B.C.", "A.D.", "FF1", "FF2", "FF3", "FF4", "FF5", "FF6", "TH", "SP")
    for form in (pattern, pattern.lower())
}  # fmt: skip
_KEYWORDS = sorted([*_PATTERNS, *_UNSUPPORTED_PATTERNS], key=len, reverse=True)
_NAME_PATTERNS = {form for name in ("MONTH", "MON", "DAY", "DY") for form in (name, name.capitalize(), name.lower())}
# FM (fill mode) drops padding and leading zeros; TM (translation mode) drops a name's padding.
_PREFIXES = ("FM", "fm", "TM", "tm")


def _template_pieces(template: str, source: exp.Expression) -> list[_Piece]:
    """The output pieces of a TO_CHAR template, read the way PostgreSQL reads it."""
    pieces: list[_Piece] = []
    at = 0
    while at < len(template):
        prefix = next((p for p in _PREFIXES if template.startswith(p, at) and _keyword_at(template, at + 2)), None)
        if prefix is not None:
            at += 2
        keyword = _keyword_at(template, at)
        if keyword in _UNSUPPORTED_PATTERNS:
            raise FeatureNotSupported(f'TO_CHAR template pattern "{keyword}" is not supported yet')
        if keyword is not None:
            fill = prefix is not None and (prefix.upper() == "FM" or keyword in _NAME_PATTERNS)
            pieces.append(_PATTERNS[keyword](source, fill))
            at += len(keyword)
        elif template[at] == '"':
            # Double-quoted text is copied; inside it a backslash takes the next character literally.
            at += 1
            while at < len(template) and template[at] != '"':
                if template[at] == "\\" and at + 1 < len(template):
                    at += 1
                pieces.append(_literal_spec(template[at]))
                at += 1
            at += 1
        elif template.startswith('\\"', at):
            pieces.append('"')
            at += 2
        else:
            pieces.append(_literal_spec(template[at]))
            at += 1
    return pieces


def _keyword_at(template: str, at: int) -> str | None:
    """The longest template pattern at ``at`` (case-sensitive, as PostgreSQL matches them)."""
    return next((k for k in _KEYWORDS if template.startswith(k, at)), None)


def _literal_spec(text: str) -> str:
    return text.replace("%", "%%")


def _to_char(call: exp.Anonymous) -> exp.Expression:
    source, template_node = _arguments(call, "to_char", (2,))
    if isinstance(source, exp.Literal) and not source.is_string:
        raise FeatureNotSupported("TO_CHAR of a number is not supported yet")
    template = _constant_text(template_node, "the template of TO_CHAR")
    if template is None or template == "":
        # PostgreSQL returns NULL for an empty template; strftime still checks the argument's type.
        return exp.Case(ifs=[exp.If(this=exp.false(), true=_call("strftime", source.copy(), exp.Literal.string("")))])
    parts: list[exp.Expression] = []
    spec = ""
    for piece in _template_pieces(template, source):
        if isinstance(piece, str):
            spec += piece
            continue
        if spec:
            parts.append(_call("strftime", source.copy(), exp.Literal.string(spec)))
            spec = ""
        parts.append(piece)
    if spec or not parts:
        parts.append(_call("strftime", source.copy(), exp.Literal.string(spec)))
    result = parts[0]
    for part in parts[1:]:
        result = exp.DPipe(this=result, expression=part)
    return exp.Paren(this=result)


# ---- regexp_match ----------------------------------------------------------------------------

_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def _capture_groups(pattern: str) -> int:
    """Capturing groups of a regular expression: '(' outside brackets, not escaped, not '(?'."""
    groups, at, in_class = 0, 0, False
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2
            continue
        if in_class:
            if char == "[" and pattern.startswith("[:", at):
                end = pattern.find(":]", at + 2)
                at = end + 2 if end >= 0 else at + 1
                continue
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A ']' right after '[' or '[^' is a literal member of the class.
            if pattern.startswith("]", at + 1):
                at += 1
            elif pattern.startswith("^]", at + 1):
                at += 2
        elif char == "(" and not pattern.startswith("(?", at):
            groups += 1
        at += 1
    return groups


def _re2_pattern(pattern: str, flags: str) -> str:
    """The RE2 pattern for a PostgreSQL pattern and flags, the flags written inline."""
    newline_sensitive, case_insensitive, literal = False, False, False
    for flag in flags:
        if flag == "g":
            raise InvalidParameterValue('regexp_match() does not support the "global" option')
        if flag not in "icnmsq":
            raise InvalidParameterValue(f'invalid regular expression option: "{flag}"')
        case_insensitive = flag == "i" or (case_insensitive and flag != "c")
        newline_sensitive = flag in "nm" or (newline_sensitive and flag != "s")
        literal = literal or flag == "q"
    if literal:
        pattern = "".join("\\" + c if c in _RE2_SPECIAL else c for c in pattern)
    # PostgreSQL's '.' matches a newline and '^' only the start, unless the match is newline-sensitive.
    inline = ("m" if newline_sensitive else "s") + ("i" if case_insensitive else "")
    return f"(?{inline}){pattern}"


def _regexp_parts(call: exp.Anonymous) -> tuple[exp.Expression, exp.Expression, int] | None:
    """(string, RE2 pattern, capture groups), or None when the pattern or the flags are NULL."""
    args = _arguments(call, "regexp_match", (2, 3))
    pattern = _constant_text(args[1], "the pattern of regexp_match")
    flags = _constant_text(args[2], "the flags of regexp_match") if len(args) == 3 else ""
    if pattern is None or flags is None:
        return None
    re2 = _re2_pattern(pattern, flags)
    return args[0], exp.Literal.string(re2), _capture_groups(re2)


def _regexp_group(string: exp.Expression, pattern: exp.Expression, group: int) -> exp.Expression:
    return _call("regexp_extract", string.copy(), pattern.copy(), exp.Literal.number(group))


def _when_matches(string: exp.Expression, pattern: exp.Expression, value: exp.Expression) -> exp.Expression:
    matches = _call("regexp_matches", string.copy(), pattern.copy())
    return exp.Case(ifs=[exp.If(this=matches, true=value)])


def _regexp_match(call: exp.Anonymous) -> exp.Expression:
    if _constant_subscript(call) is not None:
        return call  # the subscript extracts its one group (see _subscripted_regexp_match)
    parts = _regexp_parts(call)
    if parts is None:
        return exp.cast(exp.null(), exp.DataType.build("VARCHAR[]"))
    string, pattern, groups = parts
    captured = [_regexp_group(string, pattern, g) for g in range(1, groups + 1)] or [_regexp_group(string, pattern, 0)]
    return _when_matches(string, pattern, exp.Array(expressions=captured))


def _constant_subscript(call: exp.Expression) -> int | None:
    """k when ``call`` is subscripted as ``(call)[k]`` with a constant k (1-based)."""
    node = call
    while isinstance(node.parent, exp.Paren):
        node = node.parent
    bracket = node.parent
    if not isinstance(bracket, exp.Bracket) or bracket.this is not node or len(bracket.expressions) != 1:
        return None
    index = _constant_int(bracket.expressions[0])
    # sqlglot keeps constant subscripts 0-based inside the tree.
    return None if index is None else index + 1


def _subscripted_regexp_match(bracket: exp.Bracket) -> exp.Expression:
    call = bracket.this
    while isinstance(call, exp.Paren):
        call = call.this
    if not (isinstance(call, exp.Anonymous) and str(call.this).lower() == "regexp_match"):
        return bracket
    index = _constant_subscript(call)
    assert index is not None
    parts = _regexp_parts(call)
    if parts is None:
        return _null_text()
    string, pattern, groups = parts
    if not 1 <= index <= max(groups, 1):
        # Still a call on the string, so that its type is checked.
        return _when_matches(string, pattern, _null_text())
    return _when_matches(string, pattern, _regexp_group(string, pattern, index if groups else 0))


# ---- split_part ------------------------------------------------------------------------------


def _split_part(node: exp.SplitPart) -> exp.Expression:
    string, delimiter, field = (node.args.get(k) for k in ("this", "delimiter", "part_index"))
    assert string is not None and delimiter is not None and field is not None
    if _constant_int(field) == 0:
        raise InvalidParameterValue("field position must not be zero")
    if isinstance(delimiter, exp.Literal) and delimiter.is_string and delimiter.this != "":
        return node
    # An empty delimiter does not split: the whole string is field 1 (and -1), the rest are ''.
    whole = exp.Case(
        ifs=[exp.If(this=exp.In(this=_operand(field), expressions=[exp.Literal.number(1), exp.Literal.number(-1)]),
                    true=string.copy())],
        default=exp.Literal.string(""),
    )  # fmt: skip
    empty_delimiter = exp.and_(
        exp.EQ(this=_operand(delimiter), expression=exp.Literal.string("")),
        exp.Not(this=exp.Is(this=_operand(string), expression=exp.null())),
        exp.Not(this=exp.Is(this=_operand(field), expression=exp.null())),
    )
    return exp.Case(ifs=[exp.If(this=empty_delimiter, true=whole)], default=node.copy())


# ---- arrays ----------------------------------------------------------------------------------


def _array_subscript(bracket: exp.Bracket) -> exp.Expression:
    """``a[k]`` is NULL for k < 1, as in PostgreSQL (DuckDB would count from the end)."""
    if len(bracket.expressions) != 1 or isinstance(bracket.expressions[0], exp.Slice):
        return bracket
    index = bracket.expressions[0]
    constant = _constant_int(index)
    condition: exp.Expression
    if constant is not None:
        if constant >= 0:  # sqlglot keeps constant subscripts 0-based inside the tree: a[1] is 0
            return bracket
        condition = exp.false()
    elif isinstance(index, exp.Literal) and index.is_string:
        return bracket
    else:
        condition = exp.GTE(this=_operand(index), expression=exp.Literal.number(1))
    return exp.Case(ifs=[exp.If(this=condition, true=bracket.copy())])


def _dimension_bound(array: exp.Expression, dimension: exp.Expression, value: exp.Expression) -> exp.Expression:
    """``value`` for dimension 1 of a non-empty array, else NULL (tidegate's arrays have one dimension)."""
    present = exp.and_(
        exp.EQ(this=_operand(dimension), expression=exp.Literal.number(1)),
        exp.GT(this=_call("array_length", array.copy()), expression=exp.Literal.number(0)),
    )
    return exp.cast(exp.Case(ifs=[exp.If(this=present, true=value)]), exp.DataType.build("INT"))


def _array_upper(call: exp.Anonymous) -> exp.Expression:
    array, dimension = _arguments(call, "array_upper", (2,))
    return _dimension_bound(array, dimension, _call("array_length", array.copy()))


def _array_lower(call: exp.Anonymous) -> exp.Expression:
    array, dimension = _arguments(call, "array_lower", (2,))
    return _dimension_bound(array, dimension, exp.Literal.number(1))


def _cardinality(call: exp.Anonymous) -> exp.Expression:
    [array] = _arguments(call, "cardinality", (1,))
    return exp.cast(_call("array_length", array.copy()), exp.DataType.build("INT"))


_CALLS: dict[str, Callable[[exp.Anonymous], exp.Expression]] = {
    "to_char": _to_char,
    "date_part": _date_part,
    "mod": _mod,
    "regexp_match": _regexp_match,
    "array_upper": _array_upper,
    "array_lower": _array_lower,
    "cardinality": _cardinality,
}


# ---- error messages ----------------------------------------------------------------------------

# DuckDB's name for a function tidegate translates → the PostgreSQL function the user wrote.
_DUCKDB_NAMES = {"strftime": "to_char", "string_split": "split_part", "regexp_matches": "regexp_match",
                 "regexp_extract": "regexp_match"}  # fmt: skip
_DUCKDB_TYPES = {
    "INTEGER_LITERAL": "integer", "STRING_LITERAL": "unknown", "VARCHAR": "text", "BIGINT": "bigint",
    "INTEGER": "integer", "SMALLINT": "smallint", "DOUBLE": "double precision", "FLOAT": "real",
    "BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone", "INTERVAL": "interval", "BLOB": "bytea",
    "JSON": "jsonb", "TIME": "time without time zone",
}  # fmt: skip
_UNKNOWN_FUNCTION = re.compile(r'Function with name "?(\w+)"? does not exist')
_NO_MATCH = re.compile(r"(?:argument types|function call) '?\"?([^'\"(]+)\((.*?)\)'?\"?")


def postgres_function_message(message: str) -> str | None:
    """PostgreSQL's wording for DuckDB's "no function matches" binder error, or None for others."""
    if unknown := _UNKNOWN_FUNCTION.search(message):
        return f"function {unknown.group(1)} does not exist"
    if "No function matches" not in message and "Could not choose a best candidate" not in message:
        return None
    match = _NO_MATCH.search(message)
    if match is None:
        return None
    duckdb_name = match.group(1).strip()
    name = _DUCKDB_NAMES.get(duckdb_name, duckdb_name)
    types = [t.strip() for t in re.split(r",\s*(?![^()]*\))", match.group(2)) if t.strip()]
    if duckdb_name.startswith("regexp_"):
        types = types[:2]  # the group number argument is tidegate's, not the user's
    shown = [_DUCKDB_TYPES.get(t, "numeric" if t.startswith("DECIMAL") else t.lower()) for t in types]
    if not name[0].isalpha() and len(shown) == 2:
        return f"operator does not exist: {shown[0]} {name} {shown[1]}"
    return f"function {name}({', '.join(shown)}) does not exist"
