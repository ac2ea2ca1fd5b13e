"""Only the optional C speedup lives here; everything else about the package is in pyproject.toml.

optional=True: on a machine without a C compiler the install still succeeds and p2psync uses its
pure-Python checks (p2psync/_speedups.c says what the module does).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("p2psync._speedups", ["p2psync/_speedups.c"], optional=True)])
