"""Every public name, error classes included, imports from the package root."""

from __future__ import annotations

import pickle

import sqlalchemy_eventstore
from sqlalchemy_eventstore import errors


def test_every_error_class_is_exported_from_the_package_root():
    for name in errors.__all__:
        assert name in sqlalchemy_eventstore.__all__, name
        assert getattr(sqlalchemy_eventstore, name) is getattr(errors, name)


def test_every_error_has_its_reason_and_pickles():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.EventStoreError)
        error = pickle.loads(pickle.dumps(cls("message")))
        assert type(error) is cls and str(error) == "message"
        assert error.reason == cls.reason


def test_root_all_names_exist():
    for name in sqlalchemy_eventstore.__all__:
        assert hasattr(sqlalchemy_eventstore, name), name
