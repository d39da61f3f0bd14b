"""The template's upgrade path and alarms: migrate with the new image, say when no one is paged."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import load_settings
from tests.test_deploy import template

__all__ = ["template"]  # the fixture, shared with tests/test_deploy.py


def test_migration_task_runs_db_upgrade_with_the_image_being_deployed(
    template: dict[str, Any],
) -> None:
    output = template["Outputs"]["MigrationTaskDefinition"]["Value"]
    task = template["Resources"][output["Ref"]]
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert container["Command"] == ["db", "upgrade"]
    # MigrationImageUri when given (the new image, before the services update), else ImageUri.
    assert container["Image"] == {
        "Fn::If": ["HasMigrationImage", {"Ref": "MigrationImageUri"}, {"Ref": "ImageUri"}]
    }
    assert template["Conditions"]["HasMigrationImage"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "MigrationImageUri"}, ""]}]
    }
    services = [
        r["Properties"]["TaskDefinition"]["Ref"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ECS::Service"
    ]
    assert output["Ref"] not in services


def test_alarms_without_a_topic_say_so_in_an_output(template: dict[str, Any]) -> None:
    warning = template["Outputs"]["AlarmsNotifyNoOne"]
    assert warning["Condition"] == "NoAlarmTopic"
    assert template["Conditions"]["NoAlarmTopic"] == {"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}
    assert "notify no one" in warning["Value"]
    resources = template["Resources"]
    scaling = {
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    }
    for name, resource in resources.items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        actions = resource["Properties"].get("AlarmActions")
        if isinstance(actions, list) and all(a.get("Ref") in scaling for a in actions):
            continue  # scales a service, pages no one by design
        assert actions == {
            "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
        }, name


def test_every_service_task_gets_the_pool_sizes_the_settings_accept(
    template: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    default = template["Parameters"]["DatabasePoolSize"]["Default"]
    clean_env.setenv("ECSWATCH_DB_POOL_SIZE", default)
    assert load_settings().db_pool_sizes(("consumer", "api")) == (4, 5)
    resources = template["Resources"]
    services = [r for r in resources.values() if r["Type"] == "AWS::ECS::Service"]
    assert len(services) == 4
    for service in services:
        name = service["Properties"]["TaskDefinition"]["Ref"]
        (container,) = resources[name]["Properties"]["ContainerDefinitions"]
        assert {"Name": "ECSWATCH_DB_POOL_SIZE", "Value": {"Ref": "DatabasePoolSize"}} in container[
            "Environment"
        ], name
