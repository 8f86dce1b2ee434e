"""The API reference's promise: every public call documents its parameters and errors."""

from __future__ import annotations

import inspect

import pytest

from sqlalchemy_eventstore import EventStore
from sqlalchemy_eventstore.admin import make_admin_app

PUBLIC = [
    (name, function)
    for name, function in inspect.getmembers(EventStore, inspect.isfunction)
    if not name.startswith("_")
]


@pytest.mark.parametrize(("name", "function"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_every_store_method_documents_its_arguments_and_errors(name, function) -> None:
    doc = inspect.getdoc(function) or ""
    params = [p for p in inspect.signature(function).parameters if p != "self"]
    assert doc, name
    if params and "options as" not in doc:
        assert "Args:" in doc, name
        for param in params:
            assert f"{param}:" in doc, (name, param)
    if params:
        assert "Raises:" in doc, name


def test_the_class_and_the_admin_factory_document_theirs() -> None:
    for documented in (EventStore, make_admin_app):
        doc = inspect.getdoc(documented) or ""
        assert "Args:" in doc and "Raises:" in doc, documented
