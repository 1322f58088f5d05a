"""A compiler from rpcgen ``.x`` files to Python modules (``python -m pyvirtrpc.rpcgen``)."""

from pyvirtrpc.rpcgen.emitter import compile_spec
from pyvirtrpc.rpcgen.parser import ParseError, parse

__all__ = ["ParseError", "compile_file", "compile_spec", "parse"]


def compile_file(path: str, source_name: str | None = None) -> str:
    """Compile one ``.x`` file to the text of a Python module."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    name = source_name or path
    return compile_spec(parse(text, name), name)
