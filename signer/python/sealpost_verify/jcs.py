"""JSON parsing and JCS (RFC 8785) canonicalization.

The rules are those sealpost applies everywhere (Go's signer.Canonicalize):
UTF-8 only, no duplicate member names (compared after unescaping), no lone
surrogates, and no number whose value JCS would change (a lossy number:
12345678901234567890 becomes 12345678901234567000 as a double). Python's json
module accepts duplicates, lone surrogates and NaN, and reads integers
exactly, so its hooks are used to hold it to these rules.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Union

from .errors import JSONError, shorten


class Number:
    """A JSON number as written (text) and as a double (value)."""

    __slots__ = ("text", "value")

    def __init__(self, text: str, value: float):
        self.text = text
        self.value = value

    def __repr__(self) -> str:
        return f"Number({self.text})"


# Plain integers of up to 15 digits are exact doubles (2**53 > 10**15).
_EXACT = re.compile(r"-?[0-9]{1,15}")
_DECIMAL = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


def check_number(text: str) -> float:
    """Returns the double a JSON number text denotes.

    Raises a lossy_number JSONError when its JCS form has another value or it
    lies beyond a double's range.
    """
    value = float(text)
    if _EXACT.fullmatch(text) or repr(value) == text:
        # repr is the shortest text of the double: a text equal to it keeps
        # its value.
        return value
    if math.isinf(value):
        raise JSONError("lossy_number", f"{shorten(text)} is outside the range of a double")
    canon = format_number(value)
    if _decimal_key(text) != _decimal_key(canon):
        raise JSONError("lossy_number", f"{shorten(text)} would be signed as {canon}")
    return value


def _decimal_key(text: str) -> tuple:
    """The exact decimal value of a JSON number: sign, digits, exponent; () for zero."""
    m = _DECIMAL.fullmatch(text)
    sign, intpart, frac, exp_sign, exp_digits = m.groups()
    frac = frac or ""
    every = (intpart + frac).lstrip("0")
    digits = every.rstrip("0")
    if not digits:
        return ()
    e = (exp_digits or "0").lstrip("0")
    if len(e) > 9:
        return (sign, digits, exp_sign, "huge")  # beyond any double unless zero
    exp = int(e or "0") * (-1 if exp_sign == "-" else 1)
    return (sign, digits, exp - len(frac) + len(every) - len(digits))


def format_number(f: float) -> str:
    """Writes a double as JCS does: ECMAScript's Number::toString, "0" for -0."""
    if math.isnan(f) or math.isinf(f):
        raise JSONError("malformed", f"{f} has no JSON form")
    if f == 0:
        return "0"
    sign = "-" if f < 0 else ""
    # repr gives the shortest digits that read back as the same double, the
    # digits ECMAScript chooses; only the layout differs.
    r = repr(abs(f))
    mant, _, e = r.partition("e")
    intpart, _, frac = mant.partition(".")
    every = intpart + frac
    lead = len(every) - len(every.lstrip("0"))
    digits = every.strip("0")
    k = len(digits)
    n = len(intpart) + int(e or "0") - lead  # value = 0.digits * 10**n
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + digits
    else:
        x = n - 1
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if x >= 0 else "-") + str(abs(x))
    return sign + s


def _number(text: str) -> Number:
    return Number(text, check_number(text))


def _constant(name: str) -> Any:
    raise JSONError("malformed", f"{name} is not JSON")


def _object(pairs: list) -> dict:
    out: dict = {}
    for name, value in pairs:
        if name in out:
            raise JSONError("malformed", f"duplicate member {json.dumps(shorten(name))}")
        out[name] = value
    return out


def _well_formed(v: Any) -> None:
    """Refuses lone surrogates, which json decodes from escapes like \\ud800."""
    stack = [v]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONError("malformed", "a string has a lone surrogate") from None
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())


Input = Union[str, bytes, bytearray, memoryview]


def parse_json(doc: Input) -> Any:
    """Parses a document (UTF-8 bytes or a str) strictly.

    Objects are dicts, arrays lists, numbers Number objects. Raises JSONError
    with code "malformed" or "lossy_number".
    """
    if isinstance(doc, (bytes, bytearray, memoryview)):
        try:
            text = bytes(doc).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONError("malformed", "the document is not valid UTF-8") from None
    elif isinstance(doc, str):
        text = doc
    else:
        raise TypeError("expected str or bytes")
    try:
        v = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as e:
        raise JSONError("malformed", f"{e.msg} at offset {e.pos}") from None
    except RecursionError:
        raise JSONError("malformed", "nesting too deep") from None
    _well_formed(v)
    return v


def _quote(s: str) -> str:
    # With ensure_ascii=False, json escapes exactly what RFC 8785 section
    # 3.2.2.2 escapes: ", \ and controls, with \b \t \n \f \r short.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONError("malformed", "a string has a lone surrogate") from None
    return json.dumps(s, ensure_ascii=False)


def _sort_key(name: str) -> bytes:
    # RFC 8785 sorts member names by UTF-16 code units; UTF-16BE bytes
    # compare in that order.
    return name.encode("utf-16-be", "surrogatepass")


def canonicalize(v: Any) -> str:
    """Returns the JCS text of a value: as parse_json returns it, or built of
    dicts, lists, str, int, float, bool and None."""
    out: list = []
    _write(v, out)
    return "".join(out)


def _write(v: Any, out: list) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, Number):
        out.append(format_number(v.value))
    elif isinstance(v, int):
        out.append(format_number(float(v)))
    elif isinstance(v, float):
        out.append(format_number(v))
    elif isinstance(v, str):
        out.append(_quote(v))
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, e in enumerate(v):
            if i:
                out.append(",")
            _write(e, out)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        for i, name in enumerate(sorted(v, key=_sort_key)):
            if not isinstance(name, str):
                raise JSONError("malformed", "a member name is not a string")
            if i:
                out.append(",")
            out.append(_quote(name))
            out.append(":")
            _write(v[name], out)
        out.append("}")
    else:
        raise JSONError("malformed", f"a {type(v).__name__} has no JSON form")


def canonicalize_text(doc: Input) -> str:
    """Parses a document strictly and returns its JCS text."""
    try:
        return canonicalize(parse_json(doc))
    except RecursionError:
        raise JSONError("malformed", "nesting too deep") from None


def is_integer(v: Any) -> bool:
    """Reports whether v is a Number written as an integer (no fraction, no exponent)."""
    return isinstance(v, Number) and _INTEGER.fullmatch(v.text) is not None


def to_plain(v: Any) -> Any:
    """Replaces Number objects by int (integers, exactly) or float."""
    if isinstance(v, Number):
        return int(v.text) if _INTEGER.fullmatch(v.text) else v.value
    if isinstance(v, list):
        return [to_plain(e) for e in v]
    if isinstance(v, dict):
        return {k: to_plain(e) for k, e in v.items()}
    return v
