"""The scenarios ``run.py`` measures, in the order the report shows them.

One scenario per module, each with its ``Settings`` (``FULL``, ``QUICK`` and
``SMOKE``), ``run(settings, bulkhead_cases)`` returning a JSON-ready dict,
``goals(result)`` checking it against its targets, and ``report(result,
markdown)`` rendering its section. The contenders they run are shared:
bulkhead's side in ``_bulkhead_cases.py``, the alternatives in
``_alternatives.py``, the measuring in ``_harness.py``.

The job service's benchmark is not among them: ``benchmarks/service.py``
runs it on its own (it starts real server processes).
"""

from __future__ import annotations

from types import ModuleType

import dask_pools
import isolation
import memory
import rounds
import scaling
import throughput

SCENARIOS: dict[str, ModuleType] = {
    "throughput": throughput,
    "rounds": rounds,
    "isolation": isolation,
    "memory": memory,
    "scaling": scaling,
    "dask": dask_pools,
}
