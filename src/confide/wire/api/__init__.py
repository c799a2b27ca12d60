"""The operator API's request and response bodies, declared once with pydantic.

Import it as ``confide.wire.api``; the runtime never does (it does not speak this API).

The operator serves these models (FastAPI renders them and their OpenAPI
schema); :class:`confide.client.OperatorClient` validates every answer with the
same models (:func:`read_answer`), so the two sides cannot drift apart. Input
bounds are the named constants of :mod:`confide.wire`.

Example::

    >>> Health.model_validate_json('{"status": "ok"}').ok
    True
"""

from ._bodies import *  # noqa: F403 (the bodies, exactly as ``_bodies.__all__`` lists them)
from ._bodies import __all__ as __all__
