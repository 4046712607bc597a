"""Provisioning templates for ``alleycat stack``: AWS's template format, evaluated locally.

A template file holds what ``aws iot describe-provisioning-template`` shows of a template: its
name, whether it is ``enabled``, and ``templateBody``, the template itself in AWS's own format
(``Parameters``, ``Resources``, ``DeviceConfiguration``; a JSON object, or a JSON string as AWS
stores it). One more key stands in for a pre-provisioning hook, which the stack cannot run:
``allowList`` maps a parameter to the values a bike may send (``*`` and ``?`` as in shell
patterns); a bike whose value is not on it is refused, as a hook answering
``allowProvisioning: false`` would refuse it.

What the stack evaluates of the body:

- ``Parameters``: each with ``Type`` and an optional ``Default``; a parameter without a default
  must be sent by the bike. ``AWS::IoT::Certificate::Id`` is the certificate of the ownership
  token.
- ``Ref`` (a parameter) and ``Fn::Join`` (``[separator, [parts]]``), anywhere in the resources
  and the device configuration.
- ``AWS::IoT::Thing``: ``ThingName`` and ``AttributePayload`` (``racerId`` is the racer the bike
  rides for: standings check it).
- ``AWS::IoT::Certificate``: ``Status`` ``Active`` lets the certificate connect as the thing.
- ``AWS::IoT::Policy``: any policy attached gives the bike its policy on the stack's broker:
  publish on its own topic, read the results (the ACL of :mod:`simulator.backend.acl`).

Anything else in a resource is kept and ignored.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alleycat_rider.iot.fleet import FleetRequest, template_body
from simulator.errors import SimulatorError

#: The template ``alleycat stack`` writes when its folder has none, and prints a command for.
DEFAULT_TEMPLATE_NAME = "alleycat-bikes"
CERTIFICATE_ID = "AWS::IoT::Certificate::Id"
THING = "AWS::IoT::Thing"
CERTIFICATE = "AWS::IoT::Certificate"
POLICY = "AWS::IoT::Policy"


class TemplateFileError(SimulatorError):
    """A template file cannot be read or is not a template; the message names the file."""


@dataclass(frozen=True, slots=True)
class Refusal(Exception):
    """What RegisterThing answers on ``/rejected``."""

    status_code: int
    error_code: str
    error_message: str

    def payload(self) -> dict[str, Any]:
        return {
            "statusCode": self.status_code,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """What a template made of one bike's parameters."""

    thing_name: str
    attributes: dict[str, str]
    certificate_active: bool
    policies: tuple[str, ...]
    """The names (or ``inline``) of the policies attached to the certificate."""
    device_configuration: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningTemplate:
    """One template file: its name, whether it is enabled, its body and its allow-list."""

    name: str
    enabled: bool = True
    body: dict[str, Any] = field(default_factory=dict)
    allow_list: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def register(self, parameters: Mapping[str, Any], certificate_id: str) -> Registration:
        """Evaluate the template for one bike.

        Raises:
            Refusal: The template is disabled, a parameter is missing or not allowed, or the
                template cannot be evaluated.
        """
        try:
            return self._register(parameters, certificate_id)
        except (TypeError, ValueError, AttributeError) as exc:  # a template of the wrong shape
            raise Refusal(400, "InvalidTemplate", f"Template {self.name}: {exc}") from None

    def _register(self, parameters: Mapping[str, Any], certificate_id: str) -> Registration:
        if not self.enabled:
            raise Refusal(400, "InvalidRequest", f"Template {self.name} is disabled")
        values = self._parameters(parameters, certificate_id)
        for name, patterns in self.allow_list.items():
            value = values.get(name)
            if value is None or not any(fnmatch.fnmatchcase(value, p) for p in patterns):
                raise Refusal(
                    403,
                    "AccessDenied",
                    f"{name} {value!r} is not allowed by the template {self.name}",
                )
        thing: str | None = None
        attributes: dict[str, str] = {}
        active = False
        policies: list[str] = []
        resources = self.body.get("Resources")
        if not isinstance(resources, dict):
            raise Refusal(400, "InvalidTemplate", f"Template {self.name} has no Resources")
        for logical, resource in resources.items():
            if not isinstance(resource, dict):
                raise Refusal(400, "InvalidTemplate", f"Resource {logical} is not an object")
            properties = _evaluate(resource.get("Properties", {}), values)
            kind = resource.get("Type")
            if kind == THING:
                thing = str(properties.get("ThingName", ""))
                payload = properties.get("AttributePayload") or {}
                attributes = {str(k): str(v) for k, v in dict(payload).items()}
            elif kind == CERTIFICATE:
                active = properties.get("Status", "Inactive").lower() == "active"
                if properties.get("CertificateId", certificate_id) != certificate_id:
                    raise Refusal(
                        400, "InvalidTemplate", "CertificateId must be the token's certificate"
                    )
            elif kind == POLICY:
                policies.append(str(properties.get("PolicyName", "inline")))
        if not thing:
            raise Refusal(400, "InvalidTemplate", f"Template {self.name} names no thing")
        configuration = _evaluate(self.body.get("DeviceConfiguration", {}), values)
        return Registration(
            thing_name=thing,
            attributes=attributes,
            certificate_active=active,
            policies=tuple(policies),
            device_configuration={str(k): str(v) for k, v in dict(configuration).items()},
        )

    def _parameters(self, given: Mapping[str, Any], certificate_id: str) -> dict[str, str]:
        declared = self.body.get("Parameters") or {}
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if name == CERTIFICATE_ID:
                continue
            if name in given and given[name] is not None:
                values[name] = str(given[name])
            elif isinstance(spec, dict) and "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                raise Refusal(400, "InvalidParameters", f"Parameter {name} is required")
        values[CERTIFICATE_ID] = certificate_id
        return values

    def to_file(self) -> dict[str, Any]:
        """The file's JSON object."""
        document: dict[str, Any] = {"templateName": self.name, "enabled": self.enabled}
        if self.allow_list:
            document["allowList"] = {k: list(v) for k, v in self.allow_list.items()}
        document["templateBody"] = self.body
        return document


def _evaluate(value: Any, parameters: Mapping[str, str]) -> Any:
    """``value`` with every ``Ref`` and ``Fn::Join`` replaced by what it stands for."""
    if isinstance(value, list):
        return [_evaluate(item, parameters) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(function, argument)] = value.items()
        if function == "Ref":
            if argument not in parameters:
                raise Refusal(400, "InvalidTemplate", f"Ref to an undeclared parameter {argument}")
            return parameters[argument]
        if function == "Fn::Join":
            if not (isinstance(argument, list) and len(argument) == 2):
                raise Refusal(400, "InvalidTemplate", "Fn::Join takes [separator, [values]]")
            separator, parts = argument
            return str(separator).join(str(p) for p in _evaluate(parts, parameters))
        if function.startswith("Fn::"):
            raise Refusal(400, "InvalidTemplate", f"{function} is not evaluated by the stack")
    return {key: _evaluate(item, parameters) for key, item in value.items()}


def default_template(name: str = DEFAULT_TEMPLATE_NAME) -> ProvisioningTemplate:
    """The template ``alleycat provision --fleet-template NAME`` makes in AWS, enabled."""
    return ProvisioningTemplate(name=name, body=template_body(FleetRequest(template_name=name)))


def parse_template(document: Any, where: str) -> ProvisioningTemplate:
    """A template from a file's JSON object.

    Raises:
        TemplateFileError: It is not a template file (the message says what is wrong).
    """
    if not isinstance(document, dict):
        raise TemplateFileError(f"{where} must hold a JSON object with templateBody")
    name = document.get("templateName")
    body = document.get("templateBody")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise TemplateFileError(f"{where}: templateBody is not JSON: {exc}") from None
    if not isinstance(name, str) or not name or not isinstance(body, dict):
        raise TemplateFileError(f"{where} needs templateName and a templateBody object")
    enabled = document.get("enabled", False)  # as AWS: a template is disabled unless enabled
    allow = document.get("allowList") or {}
    if not isinstance(enabled, bool) or not isinstance(allow, dict):
        raise TemplateFileError(f"{where}: enabled is true or false, allowList an object")
    allow_list: dict[str, tuple[str, ...]] = {}
    for parameter, values in allow.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise TemplateFileError(f"{where}: allowList.{parameter} must be a list of strings")
        allow_list[str(parameter)] = tuple(values)
    return ProvisioningTemplate(name=name, enabled=enabled, body=body, allow_list=allow_list)


def load_templates(folder: Path) -> dict[str, ProvisioningTemplate]:
    """Every ``*.json`` template in ``folder``, by name; the default one written first if the
    folder has none.

    Raises:
        TemplateFileError: A file cannot be read or is not a template.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(folder.glob("*.json"))
    if not files:
        default = default_template()
        path = folder / f"{default.name}.json"
        path.write_text(json.dumps(default.to_file(), indent=2) + "\n")
        files = [path]
    templates: dict[str, ProvisioningTemplate] = {}
    for path in files:
        try:
            document = json.loads(path.read_text())
        except OSError as exc:
            raise TemplateFileError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise TemplateFileError(f"{path} is not JSON: {exc}") from None
        template = parse_template(document, str(path))
        templates[template.name] = template
    return templates
