"""Idempotent apply, as rules: when a live child already is what was rendered.

The planner (:mod:`.planner`) compares every rendered child with the live
object field by field, over the fields the operator rendered only (the API
server adds defaults and status; other controllers add annotations). Equal
means no write, so an unchanged resync writes nothing. Different means one PUT
whose body keeps what others own: the Deployment's replicas (the autoscaler
writes them through the scale subresource), a Service's cluster IPs, and
labels and annotations the operator did not render. Pure: the reads and writes
are the executor's (:mod:`.reconcile`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

Obj = dict[str, Any]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
#: Parents whose values are resource quantities the API server canonicalises
#: ("0.5" comes back as "500m"), compared by value instead of spelling.
_QUANTITY_PARENTS = frozenset({"requests", "limits"})

#: Optional kinds: deleted when the spec no longer asks for them (a ScaledObject
#: before the TriggerAuthentication it refers to).
OPTIONAL_KINDS = ("PodDisruptionBudget", "ScaledObject", "TriggerAuthentication")


def controller_uid(obj: Obj) -> str:
    """The uid in ``obj``'s controller owner reference (the API allows one), or ``""``."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((str(o.get("uid") or "") for o in owners if o.get("controller") is True), "")


def owned_by(obj: Obj, uid: str) -> bool:
    """Whether ``obj`` carries a controller owner reference to the object with ``uid``.

    Only such an object is the agent's to replace, delete or scale: a same-named
    object made by hand, by another tool, or by an earlier agent of the same name
    is not.
    """
    return bool(uid) and controller_uid(obj) == uid


def quantity(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY.match(value.strip())
    if not m or m.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2)]
    except InvalidOperation:
        return None


def covers(live: object, desired: object, at: tuple[str, ...] = ()) -> bool:
    """Whether ``live`` already holds everything ``desired`` says (extra live fields ok)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and covers(live[k], v, (*at, k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(covers(lv, dv, at) for lv, dv in zip(live, desired, strict=True))
    if live == desired:
        return True
    if len(at) >= 2 and at[-2] in _QUANTITY_PARENTS:
        q_live, q_desired = quantity(live), quantity(desired)
        return q_live is not None and q_live == q_desired
    return False


def first_difference(live: object, desired: object, at: str = "") -> str | None:
    """The path of the first owned field that differs (for the log), or ``None``."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return at or "."
        for k, v in desired.items():
            if k not in live:
                return f"{at}.{k}"
            found = first_difference(live[k], v, f"{at}.{k}")
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return at
        for i, (lv, dv) in enumerate(zip(live, desired, strict=True)):
            found = first_difference(lv, dv, f"{at}[{i}]")
            if found:
                return found
        return None
    return None if covers(live, desired, tuple(at.split("."))) else at


def owned_view(obj: Obj) -> Obj:
    """The part of a rendered object the operator owns (and compares)."""
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    if obj.get("kind") == "Deployment":
        view["spec"] = {k: v for k, v in obj["spec"].items() if k != "replicas"}
    return view


def merged_for_replace(desired: Obj, live: Obj) -> Obj:
    """The body of a PUT: ``desired`` plus what others own on ``live``."""
    body = {**desired, "metadata": dict(desired["metadata"])}
    meta = body["metadata"]
    live_meta = live.get("metadata", {})
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    meta["labels"] = {**(live_meta.get("labels") or {}), **(meta.get("labels") or {})}
    annotations = {**(live_meta.get("annotations") or {}), **(meta.get("annotations") or {})}
    if annotations:
        meta["annotations"] = annotations
    kind = desired.get("kind")
    if kind == "Deployment":
        body["spec"] = {**desired["spec"], "replicas": live.get("spec", {}).get("replicas")}
    elif kind == "Service":
        spec = dict(desired["spec"])
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if key in live.get("spec", {}):
                spec[key] = live["spec"][key]
        body["spec"] = spec
    return body
