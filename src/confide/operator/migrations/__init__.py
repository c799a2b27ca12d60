"""Alembic migrations of the operator's database, shipped as package data.

Run with :func:`confide.operator.upgrade_database` (or ``confide operator
migrate``). A new revision: ``alembic -x url=sqlite:////tmp/x.db revision
--autogenerate -m "..."`` from this folder after ``upgrade``, then review it.
"""
