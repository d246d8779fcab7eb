"""Test oracles: independent answers the jobs are checked against, and recorded payloads.

Nothing here ships in ``stockpipe``: a job never imports an oracle. Tests import
them as ``oracles.<module>`` (``tests/`` is on ``sys.path`` through
``tests/conftest.py``); ``data_samples/make_samples.py`` and bench scripts add
``tests/`` to the path the same way.
"""
