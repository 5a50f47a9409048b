"""The dataclasses that cross the workflow boundary carry resolved annotations.

Temporal's payload converter calls ``typing.get_type_hints`` on a dataclass every
time it converts one, and a string annotation (what ``from __future__ import
annotations`` makes of every field) is compiled again on each call. The contract's
payload modules therefore define their classes with real annotations.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

import pytest
from temporalio.converter import value_to_type

from steadfast_contract import activities, ledger, models, pricing

pytestmark = pytest.mark.unit

PAYLOAD_MODULES = (models, activities, ledger, pricing)


def _dataclasses(module: ModuleType) -> list[type]:
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__
    ]


@pytest.mark.parametrize("module", PAYLOAD_MODULES, ids=lambda m: m.__name__)
def test_payload_dataclasses_have_no_string_annotations(module: ModuleType) -> None:
    classes = _dataclasses(module)
    assert classes, module.__name__
    strings = {
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, hint in inspect.get_annotations(cls).items()
        if isinstance(hint, str)
    }
    assert strings == set()


def test_a_deep_runs_input_converts_from_its_payload() -> None:
    # The classes were reordered so that each one follows the classes it names.
    inp = models.ResearchInput("topic", resume=models.DeepResume("c", status=models.RunStatus()))
    assert value_to_type(models.ResearchInput, dataclasses.asdict(inp), []) == inp
