"""PostgreSQL's text form of one-dimensional arrays: ``{1,2,NULL}``, ``{"a b","x\\"y",plain}``, ``{}``.

Both directions work on element *texts*: ``format_array`` takes each element already in its
type's text output (None for NULL) and ``parse_array`` returns each element's text (None for
NULL), which the caller casts to the element type. ``SqlType.to_text`` formats array values
with it; INSERT and COPY parse array literals with it; the pgwire layer decodes array
parameters with it.

As PostgreSQL's ``array_out`` does, an element is double-quoted when it is empty, spells NULL
(in any case), or holds a brace, the comma delimiter, a double quote, a backslash or white
space; inside quotes a double quote and a backslash are escaped with a backslash.
``parse_array`` follows ``array_in``: white space around elements is dropped, an unquoted
NULL is the NULL element, a quoted "NULL" is the text NULL. Nested braces (a multidimensional
array) are refused: tidegate's arrays have one dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidegate.errors import FeatureNotSupported, InvalidTextRepresentation

__all__ = ["format_array", "parse_array"]

# array_isspace in PostgreSQL's arrayfuncs.c.
_SPACE = " \t\n\r\v\f"
_SPECIAL = '{},"\\'


def format_array(items: Sequence[str | None]) -> str:
    """The text of an array whose elements print as ``items`` (None for a NULL element)."""
    return "{" + ",".join(_element_text(item) for item in items) + "}"


def _element_text(text: str | None) -> str:
    if text is None:
        return "NULL"
    if text == "" or text.upper() == "NULL" or any(c in _SPECIAL or c in _SPACE for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def parse_array(text: str) -> list[str | None]:
    """The element texts of an array literal (``'{1, 2, NULL}'`` → ``['1', '2', None]``)."""
    body = text.strip(_SPACE)
    if body.startswith("["):
        # An explicit lower bound ('[1:2]={1,2}'); only the default one keeps 1-based subscripts.
        bounds, equals, rest = body.partition("=")
        if not equals or not _default_bounds(bounds):
            raise _malformed(text, "Only one-dimensional arrays with lower bound 1 are supported.")
        body = rest.strip(_SPACE)
    if not body.startswith("{"):
        raise _malformed(text, 'Array value must start with "{" or dimension information.')
    items: list[str | None] = []
    position = 1
    expect_element = True
    if body[position:].lstrip(_SPACE).startswith("}"):
        position = body.index("}", position) + 1
        return _finish(text, body, position, items)
    while True:
        while position < len(body) and body[position] in _SPACE:
            position += 1
        if position >= len(body):
            raise _malformed(text, "Unexpected end of input.")
        char = body[position]
        if char == "{":
            raise FeatureNotSupported(
                f'multidimensional array literals are not supported: "{text}"',
                hint="tidegate's arrays have one dimension.",
            )
        if expect_element:
            if char in ",}":
                raise _malformed(text, f'Unexpected "{char}" character.')
            item, position = _read_element(text, body, position)
            items.append(item)
            expect_element = False
            continue
        if char == ",":
            expect_element = True
            position += 1
            continue
        if char == "}":
            return _finish(text, body, position + 1, items)
        raise _malformed(text, f'Unexpected "{char}" character.')


def _read_element(text: str, body: str, position: int) -> tuple[str | None, int]:
    """One element from ``position``: its text (None for an unquoted NULL) and where it ends."""
    quoted = body[position] == '"'
    if quoted:
        position += 1
    out: list[str] = []
    trailing_space = 0  # unquoted white space is kept inside an element but not at its end
    escaped_any = False
    while True:
        if position >= len(body):
            raise _malformed(text, "Unexpected end of input.")
        char = body[position]
        if char == "\\":
            if position + 1 >= len(body):
                raise _malformed(text, "Unexpected end of input.")
            out.append(body[position + 1])
            escaped_any = True
            trailing_space = 0
            position += 2
            continue
        if quoted:
            position += 1
            if char == '"':
                return "".join(out), position
            out.append(char)
            continue
        if char in ",}":
            break
        if char in '{"':
            raise _malformed(text, f'Unexpected "{char}" character.')
        out.append(char)
        trailing_space = trailing_space + 1 if char in _SPACE else 0
        position += 1
    value = "".join(out[: len(out) - trailing_space])
    if not escaped_any and value.upper() == "NULL":
        return None, position
    return value, position


def _finish(text: str, body: str, position: int, items: list[str | None]) -> list[str | None]:
    if body[position:].strip(_SPACE):
        raise _malformed(text, "Junk after closing right brace.")
    return items


def _default_bounds(bounds: str) -> bool:
    lower, colon, upper = bounds.strip(_SPACE)[1:-1].partition(":")
    return bounds.strip(_SPACE).endswith("]") and bool(colon) and lower.strip() == "1" and upper.strip().isdigit()


def _malformed(text: str, detail: str) -> InvalidTextRepresentation:
    return InvalidTextRepresentation(f'malformed array literal: "{text}"', hint=detail)
