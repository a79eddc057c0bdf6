"""The Numba CPU backend: the sampling planners' whole decision compiled, on the model's
export (``dynamics.export()``, :class:`~wmrobot.planners.dynamics.ModelExport`).

``kernels`` runs packed MLP layers on blocks of candidates; ``scoring`` packs a model's export
and scores candidates by the planners' objective; ``refit`` is the elite refit; ``planners``
holds MPPI, CEM and iCEM, :func:`make_numba_planner` and :func:`choose_backend`.

Compiled code is cached on disk by Numba, so only the first process pays the JIT compile. The
cache keys a function on its own file only: after editing a module here (or
``planners/refit.py``), delete the ``__pycache__`` folders of ``planners/``, ``planners/numba/``
and ``wmrobot/`` (``agent_numba.py`` calls the kernels), or a caller keeps the old code.
"""

from wmrobot.planners.numba.planners import NUMBA_PLANNERS, choose_backend, make_numba_planner

__all__ = ["NUMBA_PLANNERS", "choose_backend", "make_numba_planner"]
