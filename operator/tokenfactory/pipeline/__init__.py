"""The reconcile pipeline: one pass of one TokenFactory, in five stages with typed hand-offs.

=============  ===========================================================  =====================
stage          does                                                         hands on
=============  ===========================================================  =====================
``collect``    parse the spec, resolve pools, list children, read metrics   ``model.Collected``
``assess``     price the fleet (``cost``), MetricsAvailable, BudgetExceeded  ``model.Assessment``
``plan``       the planner's replicas (``inputs.planner_inputs`` ->          ``model.PlanOutcome``
               ``planner.decide``), Auto / Recommend / Off
``actuate``    server-side apply ``render``'s manifests, delete old pools    ``model.Actuation``
``status``     ``api.TokenFactoryStatus``, exported series, Events           (written)
=============  ===========================================================  =====================

``reconciler.Reconciler`` runs the stages; the adapters it is given are the ``ports`` Protocols.
"""

from tokenfactory.pipeline.inputs import planner_config, planner_inputs
from tokenfactory.pipeline.model import Event, FactoryMemory, PoolObservation
from tokenfactory.pipeline.reconciler import Reconciler

__all__ = ["Event", "FactoryMemory", "PoolObservation", "Reconciler", "planner_config", "planner_inputs"]
