"""Tests of the stand-in itself (a package, so module names cannot clash with test/e2e)."""
