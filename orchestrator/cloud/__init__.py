"""Cloud backends behind one interface (``base.Cloud``): ``local`` (embedded emulation) and, later, ``aws``."""
