"""Real market data shipped in ``data_samples/`` (the default source; no network).

The files are Yahoo-style CSVs read by the ``csv`` source's parser; their origin
is written down in ``data_samples/README.md``. Ask for the interval a file holds:
``MSFT`` and ``GOOG`` are daily (``1d``), ``EURUSD`` is hourly (``1h``).
"""

from __future__ import annotations

from pathlib import Path

from stockpipe.config import PROJECT_ROOT, SourceSettings
from stockpipe.errors import ParameterError
from stockpipe.sources.csvfile import CsvSource

#: Where the shipped samples live in the checkout.
SAMPLES_DIR = PROJECT_ROOT / "data_samples"


class SamplesSource(CsvSource):
    """The shipped sample CSVs; with no symbols, ``fetch_many`` takes all of one interval."""

    name = "samples"

    def __init__(
        self, settings: SourceSettings | None = None, *, path: Path | str | None = None
    ) -> None:
        super().__init__(settings, path=path or SAMPLES_DIR)
        if not self.path.is_dir():
            raise ParameterError("path", str(self.path), "a directory of sample CSVs")
