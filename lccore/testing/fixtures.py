"""Pytest fixtures for plugin authors: ``pytest -p lccore.testing.fixtures`` (or
``pytest_plugins = ["lccore.testing.fixtures"]`` in a ``conftest.py``).

- ``lccore_engine``: an :class:`lccore.Engine` over the installed plugins (session-wide).
- ``tiny_model_dir``: the path of the kit's tiny BERT (:func:`lccore.testing.build_tiny_model`),
  built once per session, no download.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lccore_engine():
    from lccore import Engine

    return Engine(use_env=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from lccore.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("lccore-tiny-model"))
