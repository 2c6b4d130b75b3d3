"""One package (or module) per command; each exposes its entry points in `__all__`, and a command
uses another only through those."""
