"""Preloaded by a test's start server: ends the interpreter while it imports, as a broken extension would."""

import os

os._exit(3)
