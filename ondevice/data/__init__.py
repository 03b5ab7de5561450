"""Training/evaluation data: parallel text from public-domain Bibles and Debian UI catalogs.

``prepare_parallel(out_dir, src="en", tgt="de", ...)`` builds the split files; see
docs/data.md for the data card (sources, licences, rules, held-out sets, counts).
"""

from __future__ import annotations

from .gettext_catalogs import iter_ui_pairs, parse_mo, read_mo
from .prepare import SUPPORTED_PAIRS, TEST_BOOKS, TEST_UI_PACKAGES, VALID_BOOKS, prepare_parallel

__all__ = ["prepare_parallel", "SUPPORTED_PAIRS", "VALID_BOOKS", "TEST_BOOKS", "TEST_UI_PACKAGES",
           "read_mo", "parse_mo", "iter_ui_pairs"]
