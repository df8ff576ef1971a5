"""The package version and the User-Agent it sends, in one place."""

__version__ = "0.1.0"
USER_AGENT = f"nanobanana-magic/{__version__}"
TOOL = f"nanobanana-magic {__version__}"  # written into saved files and run logs
