"""The web dashboard and storefront demo served by `fusionrec serve` at /ui (see docs/ui.md)."""

from fusionrec.ui.routes import mount_ui

__all__ = ["mount_ui"]
