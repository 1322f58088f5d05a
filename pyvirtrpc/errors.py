"""The exception hierarchy shared by every layer of pyvirtrpc.

``RemoteError`` carries libvirt's error numbers exactly as a C caller sees them; the
enums ``ErrorNumber``, ``ErrorDomain`` and ``ErrorLevel`` (and libvirt's constant names,
``VIR_ERR_NO_DOMAIN``...) come from ``protocol/virerror.x``. The common codes have
subclasses, so ``except NoDomainError`` works as well as comparing ``exc.code``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from pyvirtrpc.gen.virerror import ErrorDomain, ErrorLevel, ErrorNumber

if TYPE_CHECKING:  # virnet's codec imports this module
    from pyvirtrpc.gen.virnet import MessageError

__all__ = [
    "ConnectionClosed",
    "Error",
    "ErrorDomain",
    "ErrorLevel",
    "ErrorNumber",
    "FramingError",
    "InvalidArgError",
    "NoDomainError",
    "NoSupportError",
    "OperationDeniedError",
    "OperationInvalidError",
    "ProtocolError",
    "RemoteError",
]


class Error(Exception):
    """Base of every exception pyvirtrpc raises."""


class ProtocolError(Error):
    """The peer sent something the protocol does not allow (a local finding)."""


class FramingError(ProtocolError):
    """A packet's length word or header is invalid; the connection cannot go on."""


class ConnectionClosed(Error):
    """The connection is gone; every pending and later call fails with this."""


E = TypeVar("E", ErrorNumber, ErrorDomain, ErrorLevel)


def _enum_or_int(cls: type[E], value: int) -> E | int:
    try:
        return cls(value)
    except ValueError:
        return value


class RemoteError(Error):
    """An error reported by the peer: libvirt's virError, field for field."""

    code_class: ClassVar[ErrorNumber | None] = None
    _by_code: ClassVar[dict[int, type[RemoteError]]] = {}

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if cls.code_class is not None:
            RemoteError._by_code[cls.code_class] = cls

    def __init__(
        self,
        code: int,
        domain: int,
        message: str | None,
        level: int = ErrorLevel.ERROR,
        str1: str | None = None,
        str2: str | None = None,
        str3: str | None = None,
        int1: int = 0,
        int2: int = 0,
    ) -> None:
        super().__init__(message or f"error {code} from domain {domain}")
        self.code = _enum_or_int(ErrorNumber, code)
        self.domain = _enum_or_int(ErrorDomain, domain)
        self.level = _enum_or_int(ErrorLevel, level)
        self.message = message
        self.str1, self.str2, self.str3 = str1, str2, str3
        self.int1, self.int2 = int1, int2
        self.wire: MessageError | None = None  # as received (from_wire), for to_wire

    @staticmethod
    def create(
        code: int, domain: int, message: str | None, **details: int | str | None
    ) -> RemoteError:
        """Build the most specific subclass for ``code``."""
        cls = RemoteError._by_code.get(code, RemoteError)
        return cls(code, domain, message, **details)  # type: ignore[arg-type]

    @staticmethod
    def report(code: ErrorNumber, domain: ErrorDomain, detail: str | None = None) -> RemoteError:
        """The error libvirt's ``virReportError(code, detail)`` makes in ``domain``.

        As libvirt fills it: ``message`` is the code's template with the detail,
        ``str1`` the template, ``str2`` the detail, ``int1`` and ``int2`` -1.
        """
        bare, with_detail = _TEMPLATES[code]
        template = bare if detail is None else with_detail
        message = template if detail is None else template.replace("%s", detail)
        return RemoteError.create(
            code, domain, message, str1=template, str2=detail, int1=-1, int2=-1
        )

    @classmethod
    def from_wire(cls, err: MessageError) -> RemoteError:
        """The error a peer sent; :meth:`to_wire` gives it back as it came (a relay's
        errors are byte for byte the upstream's, the unused ``dom``/``net`` included)."""
        exc = RemoteError.create(
            err.code,
            err.domain,
            err.message,
            level=err.level,
            str1=err.str1,
            str2=err.str2,
            str3=err.str3,
            int1=err.int1,
            int2=err.int2,
        )
        exc.wire = err
        return exc

    def to_wire(self) -> MessageError:
        if self.wire is not None:
            return self.wire
        from pyvirtrpc.gen.virnet import MessageError

        return MessageError(
            int(self.code),
            int(self.domain),
            self.message,
            int(self.level),
            None,
            self.str1,
            self.str2,
            self.str3,
            self.int1,
            self.int2,
            None,
        )

    def __repr__(self) -> str:
        code = getattr(self.code, "name", self.code)
        domain = getattr(self.domain, "name", self.domain)
        return f"{type(self).__name__}(code={code}, domain={domain}, message={self.message!r})"


class NoDomainError(RemoteError):
    code_class = ErrorNumber.NO_DOMAIN


class NoSupportError(RemoteError):
    code_class = ErrorNumber.NO_SUPPORT


class InvalidArgError(RemoteError):
    code_class = ErrorNumber.INVALID_ARG


class OperationInvalidError(RemoteError):
    code_class = ErrorNumber.OPERATION_INVALID


class OperationDeniedError(RemoteError):
    code_class = ErrorNumber.OPERATION_DENIED


# libvirt's message templates (virErrorMsg) for the codes pyvirtrpc reports itself:
# (without a detail, with one).
_TEMPLATES: dict[ErrorNumber, tuple[str, str]] = {
    ErrorNumber.INTERNAL_ERROR: ("internal error", "internal error: %s"),
    ErrorNumber.NO_SUPPORT: (
        "this function is not supported by the connection driver",
        "this function is not supported by the connection driver: %s",
    ),
    ErrorNumber.NO_CONNECT: (
        "no connection driver available",
        "no connection driver available for %s",
    ),
    ErrorNumber.INVALID_ARG: ("invalid argument", "invalid argument: %s"),
    ErrorNumber.AUTH_FAILED: ("authentication failed", "authentication failed: %s"),
    ErrorNumber.OPERATION_FAILED: ("operation failed", "operation failed: %s"),
    ErrorNumber.NO_NAME: ("missing name information", "missing name information in %s"),
    ErrorNumber.XML_ERROR: (
        "XML description is invalid or not well formed",
        "XML error: %s",
    ),
    ErrorNumber.OPERATION_DENIED: (
        "operation forbidden for read only access",
        "operation forbidden: %s",
    ),
    ErrorNumber.XML_DETAIL: ("parser error", "%s"),
    ErrorNumber.RPC: ("RPC error", "%s"),
    ErrorNumber.NO_DOMAIN: ("Domain not found", "Domain not found: %s"),
    ErrorNumber.OPERATION_INVALID: (
        "Requested operation is not valid",
        "Requested operation is not valid: %s",
    ),
    ErrorNumber.CONFIG_UNSUPPORTED: ("unsupported configuration", "unsupported configuration: %s"),
    ErrorNumber.ARGUMENT_UNSUPPORTED: ("argument unsupported", "argument unsupported: %s"),
    ErrorNumber.OPERATION_UNSUPPORTED: ("Operation not supported", "Operation not supported: %s"),
    ErrorNumber.ACCESS_DENIED: ("access denied", "access denied: %s"),
}
