"""Composition roots: the local stack (``local_stack``) and the `mark run` session and report (``session``)."""
