"""deploy/*.yaml read as data: CloudFormation's short tags in long form.

:func:`resolve` gives a part of a template as CloudFormation would for given
parameters: its conditions evaluated, ``Fn::If`` chosen, ``AWS::NoValue`` dropped
(other intrinsic functions are kept as written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "deploy" / "cloudformation.yaml"
MEMBER_TEMPLATE = REPO_ROOT / "deploy" / "member-account.yaml"
#: Pseudo parameters that conditions may name, as :func:`conditions` sets them.
PSEUDO_PARAMETERS = {"AWS::Region": "eu-west-1", "AWS::AccountId": "111111111111"}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags read as their long form (!Ref X -> {Ref: X})."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    # !Ref and !Condition keep their name; every other tag is an Fn:: function.
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as a dict, intrinsic functions in their long (JSON) form."""
    loaded = yaml.load(path.read_text(), Loader=CfnLoader)
    assert isinstance(loaded, dict)
    return loaded


def conditions(template: dict[str, Any], **given: str) -> dict[str, bool]:
    """Every condition of ``template`` for parameters ``given`` (the others at their default)."""
    parameters = {k: str(p.get("Default", "")) for k, p in template.get("Parameters", {}).items()}
    parameters.update(PSEUDO_PARAMETERS)
    parameters.update(given)
    definitions = template.get("Conditions", {})
    values: dict[str, bool] = {}

    def evaluate(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ((name, value),) = node.items()
        if name == "Ref":
            return parameters[value]
        if name == "Condition":
            return condition(value)
        if name == "Fn::Equals":
            left, right = (evaluate(v) for v in value)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not evaluate(value[0])
        if name == "Fn::And":
            return all(evaluate(v) for v in value)
        if name == "Fn::Or":
            return any(evaluate(v) for v in value)
        raise AssertionError(f"no evaluator for {name}")

    def condition(name: str) -> bool:
        if name not in values:
            values[name] = bool(evaluate(definitions[name]))
        return values[name]

    return {name: condition(name) for name in definitions}


_NO_VALUE = object()


def resolve(value: Any, holds: dict[str, bool]) -> Any:
    """``value`` with each ``Fn::If`` chosen by ``holds`` and ``AWS::NoValue`` removed."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            if set(node) == {"Fn::If"}:
                name, then, otherwise = node["Fn::If"]
                return walk(then if holds[name] else otherwise)
            out = {k: walk(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not _NO_VALUE}
        if isinstance(node, list):
            return [v for v in (walk(item) for item in node) if v is not _NO_VALUE]
        return node

    return walk(value)


def resources(template: dict[str, Any], **given: str) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation creates for parameters ``given``, resolved."""
    holds = conditions(template, **given)
    return {
        name: resolve(resource, holds)
        for name, resource in template["Resources"].items()
        if holds.get(resource.get("Condition", ""), True)
    }
