"""Lexer and parser for the rpcgen dialect of protocol/*.x (see protocol/README.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ANNOTATION = re.compile(r"(?<![\w@])@([a-z][a-z0-9-]*)(?:=(\S+))?")
Annotations = dict[str, str]


class ParseError(Exception):
    """A syntax or semantic error, located as ``file:line:col``."""

    def __init__(self, filename: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{filename}:{line}:{col}: {message}")
        self.filename, self.line, self.col = filename, line, col


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "ident", "number", "punct" or "eof"
    text: str
    line: int
    col: int


@dataclass(slots=True)
class Decl:
    """``type name``, with its shape: scalar, fixed ``[n]``, variable ``<n>`` or optional."""

    type: str
    name: str
    shape: str = "scalar"  # "scalar" | "fixed" | "variable" | "optional"
    size: str | None = None  # a number or a constant name; None for "<>"
    token: Token | None = None


@dataclass(slots=True)
class Const:
    name: str
    value: str
    token: Token


@dataclass(slots=True)
class EnumMember:
    name: str
    value: str
    annotations: Annotations
    token: Token


@dataclass(slots=True)
class Enum:
    name: str
    members: list[EnumMember]
    annotations: Annotations
    token: Token


@dataclass(slots=True)
class Struct:
    name: str
    fields: list[Decl]
    token: Token


@dataclass(slots=True)
class Case:
    labels: list[str]
    arm: Decl | None  # None for void


@dataclass(slots=True)
class Union:
    name: str
    discriminant: Decl
    cases: list[Case]
    default: Case | None
    token: Token


@dataclass(slots=True)
class Typedef:
    decl: Decl
    token: Token


Definition = Const | Enum | Struct | Union | Typedef


@dataclass(slots=True)
class Specification:
    filename: str
    definitions: list[Definition] = field(default_factory=list)
    annotations: Annotations = field(default_factory=dict)


_TOKEN = re.compile(
    r"(?P<space>[ \t\r]+)|(?P<newline>\n)|(?P<comment>/\*.*?\*/)|(?P<line_comment>//[^\n]*)"
    r"|(?P<passthrough>^%[^\n]*)|(?P<number>-?(?:0[xX][0-9a-fA-F]+|\d+))"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[{}()\[\]<>;,=*:])",
    re.DOTALL | re.MULTILINE,
)


def tokenize(text: str, filename: str) -> tuple[list[Token], dict[int, Annotations]]:
    """Split ``text`` into tokens; annotations in comments are returned by line."""
    tokens: list[Token] = []
    annotations: dict[int, Annotations] = {}
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(filename, line, pos - line_start + 1, f"unexpected {text[pos]!r}")
        kind, chunk = m.lastgroup, m.group()
        if kind in ("ident", "number", "punct"):
            assert kind is not None
            tokens.append(Token(kind, chunk, line, pos - line_start + 1))
        elif kind in ("comment", "line_comment"):
            for name, value in ANNOTATION.findall(chunk):
                annotations.setdefault(line, {})[name] = value
        newlines = chunk.count("\n")
        if newlines:
            line += newlines
            line_start = pos + chunk.rindex("\n") + 1
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens, annotations


class Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.tokens, self.annotations = tokenize(text, filename)
        self.pos = 0

    # -- token helpers

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def error(self, token: Token, message: str) -> ParseError:
        return ParseError(self.filename, token.line, token.col, message)

    def expect(self, text: str) -> Token:
        token = self.next()
        if token.text != text:
            found = token.text or "end of file"
            raise self.error(token, f"expected {text!r}, found {found!r}")
        return token

    def accept(self, text: str) -> bool:
        if self.peek().text == text:
            self.pos += 1
            return True
        return False

    def ident(self) -> Token:
        token = self.next()
        if token.kind != "ident":
            raise self.error(token, f"expected a name, found {token.text or 'end of file'!r}")
        return token

    def value(self) -> str:
        token = self.next()
        if token.kind not in ("ident", "number"):
            raise self.error(token, f"expected a number or constant, found {token.text!r}")
        return token.text

    # -- grammar

    def parse(self) -> Specification:
        spec = Specification(self.filename)
        for line_annotations in self.annotations.values():
            if "prefix" in line_annotations:
                spec.annotations["prefix"] = line_annotations["prefix"]
        while self.peek().kind != "eof":
            spec.definitions.append(self.definition())
        return spec

    def definition(self) -> Definition:
        token = self.ident()
        result: Definition
        if token.text == "const":
            name = self.ident()
            self.expect("=")
            result = Const(name.text, self.value(), name)
        elif token.text == "enum":
            result = self.enum_body(self.ident())
        elif token.text == "struct":
            name = self.ident()
            result = Struct(name.text, self.struct_body(), name)
        elif token.text == "union":
            result = self.union_body(self.ident())
        elif token.text == "typedef":
            decl = self.declaration()
            if decl is None:
                raise self.error(token, "typedef of void")
            result = Typedef(decl, token)
        else:
            raise self.error(token, f"expected a definition, found {token.text!r}")
        self.expect(";")
        return result

    def enum_body(self, name: Token) -> Enum:
        self.expect("{")
        members = []
        while True:
            member = self.ident()
            self.expect("=")
            value = self.value()
            members.append(
                EnumMember(member.text, value, self.annotations.get(member.line, {}), member)
            )
            if not self.accept(","):
                break
            if self.peek().text == "}":  # tolerate a trailing comma
                break
        self.expect("}")
        return Enum(name.text, members, self.annotations.get(name.line, {}), name)

    def struct_body(self) -> list[Decl]:
        self.expect("{")
        fields = []
        while not self.accept("}"):
            decl = self.declaration()
            if decl is not None:
                fields.append(decl)
            self.expect(";")
        return fields

    def union_body(self, name: Token) -> Union:
        self.expect("switch")
        self.expect("(")
        discriminant = self.declaration()
        if discriminant is None or discriminant.shape != "scalar":
            raise self.error(name, "a union needs a scalar discriminant")
        self.expect(")")
        self.expect("{")
        cases: list[Case] = []
        default: Case | None = None
        while not self.accept("}"):
            token = self.ident()
            if token.text == "case":
                labels = [self.value()]
                self.expect(":")
                while self.accept("case"):
                    labels.append(self.value())
                    self.expect(":")
                cases.append(Case(labels, self.declaration()))
            elif token.text == "default":
                self.expect(":")
                default = Case([], self.declaration())
            else:
                raise self.error(token, f"expected 'case' or 'default', found {token.text!r}")
            self.expect(";")
        return Union(name.text, discriminant, cases, default, name)

    def type_name(self) -> Token:
        token = self.ident()
        if token.text == "unsigned":
            following = self.peek().text
            if following in ("int", "hyper", "char", "short", "long"):
                self.next()
                kind = "unsigned hyper" if following == "hyper" else "unsigned int"
                return Token("ident", kind, token.line, token.col)
            return Token("ident", "unsigned int", token.line, token.col)
        if token.text in ("struct", "enum", "union"):
            return self.ident()
        return token

    def declaration(self) -> Decl | None:
        """A declaration, or None for ``void``."""
        type_token = self.type_name()
        if type_token.text == "void":
            return None
        if self.accept("*"):
            return Decl(type_token.text, self.ident().text, "optional", None, type_token)
        name = self.ident().text
        decl = Decl(type_token.text, name, "scalar", None, type_token)
        if self.accept("["):
            decl.shape, decl.size = "fixed", self.value()
            self.expect("]")
        elif self.accept("<"):
            decl.shape = "variable"
            if not self.accept(">"):
                decl.size = self.value()
                self.expect(">")
        elif type_token.text in ("string", "opaque"):
            raise self.error(type_token, f"{type_token.text} needs a size: <N>, <> or [N]")
        return decl


def parse(text: str, filename: str) -> Specification:
    return Parser(text, filename).parse()
