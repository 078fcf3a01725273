"""The `mark` command line: ``main`` (parser and most commands), ``forecast``, ``plan_fleet``."""
