"""Preloaded by a test's start server: an import that takes longer than a probe's deadline (a hung file system)."""

import time

time.sleep(60)
