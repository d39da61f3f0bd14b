"""deploy/cloudformation.yaml read as data: CloudFormation's short tags in long form."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "deploy" / "cloudformation.yaml"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags read as their long form (!Ref X -> {Ref: X})."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
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


def load_template() -> dict[str, Any]:
    """The template as a dict, intrinsic functions in their long (JSON) form."""
    loaded = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    assert isinstance(loaded, dict)
    return loaded
