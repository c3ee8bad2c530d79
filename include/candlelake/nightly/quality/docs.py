"""The Data Docs site: where it lives, its rebuild after a validation, its pages kept offline.

The site is static HTML in `<reports_dir>/data_docs/` (index.html), served by the platform's reports
server (candlelake.platform.reports) and linked from the dashboard's Quality page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DOCS_DIR = "data_docs"
DOCS_SITE = "candlelake"

# The logo of every Data Docs page is fetched from Great Expectations' bucket with the context's id in
# the URL (a usage beacon each time a page is opened): point it at the site's own copy instead.
_REMOTE_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[^\"']*?/logo-long\.png[^\"']*")


def docs_index(reports_dir: Path) -> Path:
    """The Data Docs site's front page (the dashboard links to it)."""
    return reports_dir / DOCS_DIR / "index.html"


def site_config(reports_dir: Path) -> dict[str, Any]:
    """Our one Data Docs site, as the context's `data_docs_sites` entry: files in `<reports_dir>/data_docs`."""
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str((reports_dir / DOCS_DIR).resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def build_docs(context: Any, reports_dir: Path, identifiers: Sequence[Any]) -> list[str | None]:
    """Rebuild the site with the results of `identifiers`; returns their pages (absolute paths; None
    where the context names none), every page touched showing the local logo."""
    context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=list(identifiers))
    pages = [_docs_page(context, identifier) for identifier in identifiers]
    localize_logo(reports_dir / DOCS_DIR, [docs_index(reports_dir), *(Path(p) for p in pages if p)])
    return pages


def localize_logo(site: Path, pages: Sequence[Path]) -> None:
    """Rewrite `pages` of the site so that their logo is the local one (no request leaves the machine)."""
    logo = site / "static" / "images" / "logo-long.png"
    for page in pages:
        if not page.is_file():
            continue
        text = page.read_text()
        local = os.path.relpath(logo, page.parent)
        fixed = _REMOTE_LOGO.sub(local, text)
        if fixed != text:
            page.write_text(fixed)


def _docs_page(context: Any, identifier: Any) -> str | None:
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=DOCS_SITE)
    url = urls[0].get("site_url") if urls else None
    return url.removeprefix("file://") if url else None
