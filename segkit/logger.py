"""segkit's logger, printing PaddleSeg's ``2022-10-24 23:58:30 [INFO]\tmessage`` format to stdout."""

import logging
import sys


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of the call (so redirection and capture work)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def line_format() -> logging.Formatter:
    """The format of every segkit log line, on the console and in ``train.log``."""
    return logging.Formatter("%(asctime)s [%(levelname)s]\t%(message)s", "%Y-%m-%d %H:%M:%S")


logger = logging.getLogger("segkit")
if not logger.handlers:
    _handler = _StdoutHandler()
    _handler.setFormatter(line_format())
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
