"""onec-mcp-proxy: expose any 1C:Enterprise base to MCP clients."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onec-mcp-proxy")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
