"""syndicate: feed → article → edition → delivery, and article → post."""

__version__ = "0.1.0"
USER_AGENT = f"syndicate/{__version__} (+https://github.com/syndicate-news/syndicate)"
