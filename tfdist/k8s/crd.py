"""Strict validation of a custom resource (JobSet, TFJob, Kueue's) against
its CRD.

``kubernetes-validate`` knows the built-in kinds only. A custom resource is
checked against the ``openAPIV3Schema`` of its CustomResourceDefinition's
version, with every object that lists ``properties`` (and does not set
``x-kubernetes-preserve-unknown-fields``) closed, as the API server's
structural pruning and ``kubectl apply --validate=strict`` treat it: a
misspelt field fails instead of being silently dropped. Then the schema's
CEL rules (``x-kubernetes-validations``), which the API server evaluates on
create: each rule of a schema node, with ``self`` every value present at
that node (transition rules, which read ``oldSelf``, apply to updates only
and are skipped). A rule whose evaluation fails (a field it reads is
missing, or the interpreter lacks a function) fails the object, as the API
server would reject it: no rule passes unread.

Owns schema_of and validate. Imports nothing from tfdist; jsonschema, yaml
and celpy (cel-python) are imported when used.
"""

from __future__ import annotations

import copy
import functools
import os


def _closed(schema):
  """``schema`` with every object that lists properties closed."""
  if isinstance(schema, list):
    return [_closed(value) for value in schema]
  if not isinstance(schema, dict):
    return schema
  schema = {key: _closed(value) for key, value in schema.items()}
  if ("properties" in schema
      and not schema.get("x-kubernetes-preserve-unknown-fields")
      and "additionalProperties" not in schema):
    schema["additionalProperties"] = False
  return schema


def _schema(crd: dict, version: str) -> dict:
  """The openAPIV3Schema of ``version`` of a CRD, as it is (not a copy)."""
  for entry in crd["spec"]["versions"]:
    if entry["name"] == version:
      return entry["schema"]["openAPIV3Schema"]
  raise KeyError(f"{crd['metadata']['name']} has no version {version!r}")


def schema_of(crd: dict, version: str) -> dict:
  """The closed openAPIV3Schema of ``version`` (e.g. ``v1alpha2``) of a CRD.

  Raises:
    KeyError: the CRD has no such version.
  """
  return _closed(copy.deepcopy(_schema(crd, version)))


def validate(resource: dict, crd_path: str) -> None:
  """Validates ``resource`` against the CRD in the YAML file ``crd_path``.

  Raises:
    jsonschema.ValidationError: an unknown field, a wrong type or value, a
      broken CEL rule.
    ValueError: the CRD is for another group or kind.
  """
  stat = os.stat(crd_path)
  crd = _load(crd_path, stat.st_mtime_ns, stat.st_size)
  group, _, version = resource["apiVersion"].rpartition("/")
  names = crd["spec"]["names"]
  if (group, resource["kind"]) != (crd["spec"]["group"], names["kind"]):
    raise ValueError(f"{crd_path} defines {names['kind']} of "
                     f"{crd['spec']['group']}, not {resource['kind']} of "
                     f"{group}")
  _validator(crd_path, stat.st_mtime_ns, stat.st_size,
             version).validate(resource)
  _check_rules(_schema(crd, version), resource, resource["kind"])


def _check_rules(schema: dict, value, path: str) -> None:
  """Evaluates the CEL rules of ``schema`` and of its nested nodes on
  ``value``; raises jsonschema.ValidationError for the first one broken."""
  for rule in schema.get("x-kubernetes-validations", []):
    if "oldSelf" not in rule["rule"]:
      _check_rule(rule, value, path)
  if isinstance(value, dict):
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
      if key in properties:
        _check_rules(properties[key], item, f"{path}.{key}")
      elif isinstance(extra, dict):
        _check_rules(extra, item, f"{path}.{key}")
  elif isinstance(value, list) and isinstance(schema.get("items"), dict):
    for index, item in enumerate(value):
      _check_rules(schema["items"], item, f"{path}[{index}]")


def _check_rule(rule: dict, value, path: str) -> None:
  import celpy  # pylint: disable=g-import-not-at-top
  import jsonschema  # pylint: disable=g-import-not-at-top
  try:
    result = _program(rule["rule"]).evaluate(
        {"self": celpy.json_to_cel(value)})
  except (celpy.CELEvalError, celpy.CELParseError, TypeError) as e:
    result = e  # the interpreter's own failure, reported below
  if isinstance(result, Exception):
    # The API server rejects the object too (e.g. a field the rule reads is
    # missing); an interpreter that lacks a function also ends here.
    raise jsonschema.ValidationError(
        f"{path}: evaluating the CRD's rule {rule['rule']!r} fails "
        f"({result})")
  if not bool(result):
    message = rule.get("message") or f"breaks the rule {rule['rule']!r}"
    raise jsonschema.ValidationError(f"{path}: {message}")


@functools.lru_cache(maxsize=512)
def _program(rule: str):
  """A compiled CEL rule (CRDs repeat them: compiled once each)."""
  import celpy  # pylint: disable=g-import-not-at-top
  environment = celpy.Environment()
  return environment.program(environment.compile(rule))


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> dict:
  """The parsed CRD file (a CRD is about 1 MB of YAML: parsed once per
  version of the file, named by its modification time and size)."""
  del mtime_ns, size  # the cache key
  import yaml  # pylint: disable=g-import-not-at-top
  loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
  with open(path) as f:
    return yaml.load(f, Loader=loader)


@functools.lru_cache(maxsize=8)
def _validator(path: str, mtime_ns: int, size: int, version: str):
  """A validator of ``version``'s closed schema, the schema checked once."""
  import jsonschema  # pylint: disable=g-import-not-at-top
  schema = schema_of(_load(path, mtime_ns, size), version)
  cls = jsonschema.validators.validator_for(schema)
  cls.check_schema(schema)
  return cls(schema)
