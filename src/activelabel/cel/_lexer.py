"""CEL lexer: text -> tokens, with literal decoding (escapes, int ranges)."""

from __future__ import annotations

import re
from typing import NamedTuple

from activelabel.cel._values import UInt
from activelabel.errors import CELSyntaxError

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

RESERVED = frozenset(
    ["as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"]
)


class Token(NamedTuple):
    kind: str  # INT, UINT, DOUBLE, STRING, BYTES, IDENT, QIDENT (`a-b`), OP, EOF
    text: str
    offset: int
    value: object = None


_STRING = (
    r"(?P<prefix>[bB])?"
    r"(?P<body>'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\""
    r"|'(?:\\.|[^\\'\r\n])*'|\"(?:\\.|[^\\\"\r\n])*\")"
)
_RAW_STRING = r"(?P<rprefix>[rR][bB]?|[bB][rR])(?P<rbody>'''.*?'''|\"\"\".*?\"\"\"|'[^'\r\n]*'|\"[^\"\r\n]*\")"

_TOKEN = re.compile(
    r"(?P<ws>[ \t\n\r\f]+|//[^\n]*)"
    rf"|{_RAW_STRING}"
    rf"|{_STRING}"
    r"|(?P<hex>0[xX][0-9a-fA-F]+[uU]?)"
    r"|(?P<double>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<int>\d+[uU]?)"
    r"|(?P<ident>[_a-zA-Z][_a-zA-Z0-9]*)"
    r"|`(?P<qident>[_a-zA-Z0-9./\-]+)`"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!+\-*/%?:.,\[\](){}])",
    re.DOTALL,
)

_SURROGATE = re.compile("[\ud800-\udfff]")
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}
_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"`?])|[xX]([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-3][0-7]{2})|(.?))", re.DOTALL)


def _decode(body: str, is_bytes: bool, raw: bool, text: str, offset: int) -> str | bytes:
    """Decode a quoted literal body (quotes already stripped)."""
    if raw:
        if not is_bytes:
            return body
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise syntax_error("bytes literal contains a character that is not valid Unicode", text, offset) from exc
    parts: list[bytes] = []
    pos = 0

    def fail(msg: str, at: int) -> CELSyntaxError:
        return syntax_error(msg, text, offset + at)

    for m in _ESCAPE.finditer(body):
        parts.append(body[pos : m.start()].encode("utf-8", "surrogatepass"))
        pos = m.end()
        simple, hx, u4, u8, octal, bad = m.groups()
        if simple is not None:
            parts.append(_SIMPLE_ESCAPES[simple].encode())
        elif hx is not None or octal is not None:
            code = int(hx, 16) if hx is not None else int(octal, 8)
            if is_bytes:
                parts.append(bytes([code]))
            else:
                parts.append(chr(code).encode("utf-8"))
        elif u4 is not None or u8 is not None:
            code = int(u4 or u8, 16)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise fail(f"invalid unicode code point in escape \\{m.group(0)[1:]}", m.start())
            if is_bytes:
                raise fail("unicode escapes are not allowed in bytes literals; use \\x escapes", m.start())
            parts.append(chr(code).encode("utf-8"))
        else:
            raise fail(f"invalid escape sequence '\\{bad}'", m.start())
    parts.append(body[pos:].encode("utf-8", "surrogatepass"))
    data = b"".join(parts)
    if is_bytes:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail("string literal is not valid UTF-8", 0) from exc


# int() raises a ValueError past 4,300 digits; a literal this long is far outside int64/uint64 anyway.
_MAX_INT_DIGITS = 1_000


def syntax_error(message: str, text: str, offset: int) -> CELSyntaxError:
    """A CELSyntaxError pointing at ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return CELSyntaxError(message, expr=text, line=line, column=col)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an EOF token."""
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise syntax_error("the expression contains a lone surrogate, which is not valid Unicode", text, bad.start())
    tokens: list[Token] = []
    pos = 0
    n = len(text)
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                raise syntax_error("unterminated string literal", text, pos)
            hint = {"=": " (did you mean '=='?)", "&": " (did you mean '&&'?)", "|": " (did you mean '||'?)"}
            raise syntax_error(f"unexpected character {ch!r}{hint.get(ch, '')}", text, pos)
        kind = m.lastgroup
        start = m.start()
        pos = m.end()
        if kind == "ws":
            continue
        tok = m.group(0)
        if kind in ("rbody", "body"):
            prefix = (m.group("rprefix") if kind == "rbody" else m.group("prefix")) or ""
            body = m.group(kind)
            q = 3 if body[:3] in ("'''", '"""') and len(body) >= 6 else 1
            lower = prefix.lower()
            is_bytes = "b" in lower
            value = _decode(body[q:-q], is_bytes, "r" in lower, text, m.start(kind) + q)
            tokens.append(Token("BYTES" if is_bytes else "STRING", tok, start, value))
        elif kind == "hex" or kind == "int":
            unsigned = tok[-1] in "uU"
            digits = tok[:-1] if unsigned else tok
            if len(digits) > _MAX_INT_DIGITS:  # int() itself refuses past 4,300 digits with a ValueError
                raise syntax_error(f"integer literal of {len(digits):,} digits is out of range", text, start)
            v = int(digits, 16) if kind == "hex" else int(digits)
            if unsigned:
                if v > UINT64_MAX:
                    raise syntax_error(f"uint literal {tok} is out of range (max {UINT64_MAX})", text, start)
                tokens.append(Token("UINT", tok, start, UInt(v)))
            else:
                # range checked by the parser, which knows about a leading '-'
                tokens.append(Token("INT", tok, start, v))
        elif kind == "double":
            tokens.append(Token("DOUBLE", tok, start, float(tok)))
        elif kind == "ident":
            tokens.append(Token("IDENT", tok, start, tok))
        elif kind == "qident":
            tokens.append(Token("QIDENT", tok, start, m.group("qident")))
        else:
            tokens.append(Token("OP", tok, start, tok))
    tokens.append(Token("EOF", "", n))
    return tokens
