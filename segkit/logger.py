"""segkit's logger, printing PaddleSeg's ``2022-10-24 23:58:30 [INFO]\tmessage`` format."""

import logging
import sys

logger = logging.getLogger("segkit")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s]\t%(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
