"""Pure detection of pods that cannot be created for a factory's Deployments (issue 15, item 4).

When the Pod Security admission, a ResourceQuota or a LimitRange refuses the pods of a ReplicaSet, the
ReplicaSet controller records a ``ReplicaFailure`` condition (reason ``FailedCreate``) on the
ReplicaSet, and the Deployment controller copies it onto the Deployment's status. Nothing else
changes: the Deployment exists, so "all children applied" would be true while no pod ever runs.

``creation_failures`` reads those conditions from Deployment (or ReplicaSet) objects as the apiserver
returns them and says, as data, what the reconciler should report: Degraded=True with reason
``PodCreationFailed`` and a Warning Event naming the Deployment and the cause. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REASON = "PodCreationFailed"
MAX_MESSAGE = 600


@dataclass(frozen=True)
class CreationFailure:
    """Pods of one Deployment (or ReplicaSet) cannot be created."""

    kind: str
    name: str
    cause: str  # PodSecurity, QuotaExceeded or FailedCreate
    message: str

    def describe(self) -> str:
        return f"{self.kind} {self.name}: {self.cause}: {self.message}"


def classify(message: str) -> str:
    text = message.lower()
    if "podsecurity" in text or "pod security" in text:
        return "PodSecurity"
    if "exceeded quota" in text or "resourcequota" in text:
        return "QuotaExceeded"
    return "FailedCreate"


def _shorten(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def creation_failure(obj: Mapping[str, Any]) -> CreationFailure | None:
    """The ReplicaFailure condition of one Deployment or ReplicaSet, if it is True."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            message = str(cond.get("message") or cond.get("reason") or "pods cannot be created")
            return CreationFailure(kind=str(obj.get("kind") or "Deployment"),
                                   name=str((obj.get("metadata") or {}).get("name", "?")),
                                   cause=classify(message), message=_shorten(message))
    return None


def creation_failures(objects: Iterable[Mapping[str, Any]]) -> list[CreationFailure]:
    """Every Deployment/ReplicaSet among ``objects`` whose pods cannot be created, in the order given."""
    return [f for f in (creation_failure(o) for o in objects) if f is not None]


@dataclass(frozen=True)
class Report:
    """What to report: the Degraded condition's reason and message, and the Warning Events (reason, message)."""

    reason: str
    message: str
    events: list[tuple[str, str]]


def report(failures: list[CreationFailure]) -> Report | None:
    if not failures:
        return None
    message = "; ".join(f.describe() for f in failures)
    return Report(reason=REASON, message=message, events=[(REASON, f.describe()) for f in failures])
