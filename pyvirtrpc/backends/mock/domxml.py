"""Domain XML for the mock: parsed with xml.etree, checked as libvirt checks the basics,
and written back the way libvirt formats it (two-space indent, single-quoted attributes).

Every element and attribute is kept, known to libvirt or not; nothing is added but the
``<uuid>`` when the XML has none, and the live ``id`` attribute of a running domain.
"""

from __future__ import annotations

import io
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import cached_property

from pyvirtrpc.errors import ErrorDomain, ErrorNumber, RemoteError

__all__ = [
    "DomainXML",
    "format_uuid",
    "parse_domain_xml",
    "parse_uuid",
]

_UNITS = {
    "": 1024, "b": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
    "p": 1024**5, "pib": 1024**5, "pb": 1000**5,
    "e": 1024**6, "eib": 1024**6, "eb": 1000**6,
}
_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}
)
_NS_TAG = re.compile(r"^\{([^}]*)\}(.*)$")


def format_uuid(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes=bytes(raw)))


def parse_uuid(text: str) -> bytes | None:
    """libvirt's UUID syntax: 32 hex digits, dashes anywhere between pairs; else None."""
    digits = text.strip().replace("-", "")
    if len(digits) != 32 or not re.fullmatch(r"[0-9a-fA-F]{32}", digits):
        return None
    return bytes.fromhex(digits)


class DomainXML:
    """A domain definition: the element tree and the namespace prefixes it came with."""

    def __init__(self, root: ET.Element, prefixes: dict[str, str]) -> None:
        self.root = root
        self.prefixes = prefixes  # namespace URI -> prefix, as declared in the source

    # ------------------------------------------------------------------ reading

    @property
    def name(self) -> str:
        return (self.root.findtext("name") or "").strip()

    @property
    def uuid(self) -> bytes:
        raw = parse_uuid(self.root.findtext("uuid") or "")
        assert raw is not None  # checked by parse_domain_xml
        return raw

    def memory_kib(self, tag: str) -> int:
        """``<memory>`` or ``<currentMemory>`` in KiB (0 if absent)."""
        element = self.root.find(tag)
        text = "" if element is None else (element.text or "").strip()
        if element is None or not text.isdigit():
            return 0
        scale = _UNITS.get(element.get("unit", "").lower(), 1024)
        return -(-int(text) * scale // 1024)  # rounded up, as libvirt does

    @cached_property
    def max_memory(self) -> int:
        return self.memory_kib("memory")

    @cached_property
    def current_memory(self) -> int:
        return self.memory_kib("currentMemory") or self.max_memory

    @cached_property
    def vcpus(self) -> int:
        element = self.root.find("vcpu")
        text = (element.text or "").strip() if element is not None else ""
        return int(text) if text.isdigit() else 1

    def lifecycle_action(self, tag: str, default: str) -> str:
        return (self.root.findtext(tag) or default).strip()

    def disks(self) -> Iterator[tuple[str, ET.Element]]:
        """(target, ``<disk>``) of the disks that have a target (the ones a guest sees)."""
        for disk in self.root.iterfind("devices/disk"):
            target = disk.find("target")
            dev = None if target is None else target.get("dev")
            if dev:
                yield dev, disk

    # ------------------------------------------------------------------ writing

    def format(self, domain_id: int | None = None) -> str:
        """The XML as libvirt prints it; ``domain_id`` set for a running domain."""
        root = self.root
        if domain_id is not None:
            attrs = list(root.attrib.items())
            position = 1 if attrs and attrs[0][0] == "type" else 0
            attrs.insert(position, ("id", str(domain_id)))
            root = ET.Element(root.tag, dict(attrs))
            root.text, root.tail = self.root.text, self.root.tail
            root.extend(list(self.root))
        out = io.StringIO()
        self._write(out, root, 0, set())
        return out.getvalue()

    def _write(self, out: io.StringIO, element: ET.Element, depth: int, declared: set[str]) -> None:
        pad = "  " * depth
        declare: list[str] = []
        tag = self._qualified(element.tag, declared, declare)
        attrs = [(self._qualified(k, declared, declare), v) for k, v in element.attrib.items()]
        decls = "".join(f" xmlns:{self.prefixes.get(ns, '')}='{ns}'" if self.prefixes.get(ns)
                        else f" xmlns='{ns}'" for ns in declare)
        text = "".join(f" {k}='{v.translate(_ESCAPES)}'" for k, v in attrs)
        children = list(element)
        content = (element.text or "").strip() if children else (element.text or "")
        if not children and not content:
            out.write(f"{pad}<{tag}{decls}{text}/>\n")
            return
        if not children:
            out.write(f"{pad}<{tag}{decls}{text}>{content.translate(_ESCAPES)}</{tag}>\n")
            return
        out.write(f"{pad}<{tag}{decls}{text}>")
        out.write(f"{content.translate(_ESCAPES)}\n" if content else "\n")
        inner = declared | set(declare)
        for child in children:
            self._write(out, child, depth + 1, inner)
        out.write(f"{pad}</{tag}>\n")

    def _qualified(self, name: str, declared: set[str], declare: list[str]) -> str:
        match = _NS_TAG.match(name)
        if match is None:
            return name
        ns, local = match.groups()
        if ns == "http://www.w3.org/XML/1998/namespace":
            return f"xml:{local}"
        if ns not in declared and ns not in declare:
            if ns not in self.prefixes:
                self.prefixes[ns] = f"ns{len(self.prefixes)}"
            declare.append(ns)
        prefix = self.prefixes[ns]
        return f"{prefix}:{local}" if prefix else local


def parse_domain_xml(text: str) -> DomainXML:
    """Parse and check a domain definition; raise RemoteError as libvirt would.

    Checked, in libvirt's order: well-formed XML, root ``<domain>``, a name (without a
    newline), a well-formed uuid (one is generated when absent), the ``type``
    attribute, an ``<os><type>``.
    """
    prefixes: dict[str, str] = {}
    try:
        events = ET.iterparse(io.StringIO(text), events=("start-ns", "end"))
        root: ET.Element | None = None
        for kind, item in events:
            if kind == "start-ns":
                prefix, uri = item
                prefixes.setdefault(uri, prefix)
            else:
                root = item
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else 1
        reason = str(exc).split(":", 1)[0]
        raise RemoteError.report(
            ErrorNumber.XML_DETAIL, ErrorDomain.DOMAIN, f"(domain_definition):{line}: {reason}"
        ) from None
    assert root is not None
    if root.tag != "domain":
        raise RemoteError.report(
            ErrorNumber.XML_ERROR, ErrorDomain.XML,
            f"expecting root element of 'domain', not '{root.tag}'",
        )
    name = root.findtext("name")
    if not name:
        raise RemoteError.report(ErrorNumber.NO_NAME, ErrorDomain.DOMAIN)
    if "\n" in name:
        raise RemoteError.report(
            ErrorNumber.XML_DETAIL, ErrorDomain.XML, "invalid char in name: \n"
        )
    uuid_element = root.find("uuid")
    if uuid_element is None or not (uuid_element.text or "").strip():
        if uuid_element is None:
            uuid_element = ET.Element("uuid")
            position = list(root).index(root.find("name")) + 1  # type: ignore[arg-type]
            root.insert(position, uuid_element)
        uuid_element.text = str(uuidlib.uuid4())
    else:
        raw = parse_uuid(uuid_element.text or "")
        if raw is None:
            raise RemoteError.report(
                ErrorNumber.INTERNAL_ERROR, ErrorDomain.DOMAIN, "malformed uuid element"
            )
        uuid_element.text = format_uuid(raw)
    if not root.get("type"):
        raise RemoteError.report(
            ErrorNumber.INTERNAL_ERROR, ErrorDomain.DOMAIN, "missing domain type attribute"
        )
    if not (root.findtext("os/type") or "").strip():
        raise RemoteError.report(
            ErrorNumber.XML_ERROR, ErrorDomain.DOMAIN, "an os <type> must be specified"
        )
    _strip_layout(root)
    return DomainXML(root, prefixes)


def _strip_layout(element: ET.Element) -> None:
    """Drop indentation whitespace (libvirt reformats)."""
    if len(element):
        if element.text is not None and not element.text.strip():
            element.text = None
        for child in element:
            _strip_layout(child)
    element.tail = None
