"""Strict validation of a custom resource (JobSet, TFJob) against its CRD.

``kubernetes-validate`` knows the built-in kinds only. A custom resource is
checked against the ``openAPIV3Schema`` of its CustomResourceDefinition's
version, with every object that lists ``properties`` (and does not set
``x-kubernetes-preserve-unknown-fields``) closed, as the API server's
structural pruning and ``kubectl apply --validate=strict`` treat it: a
misspelt field fails instead of being silently dropped.

Owns schema_of and validate. Imports nothing from tfdist; jsonschema and
yaml are imported when used.
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


def schema_of(crd: dict, version: str) -> dict:
  """The closed openAPIV3Schema of ``version`` (e.g. ``v1alpha2``) of a CRD.

  Raises:
    KeyError: the CRD has no such version.
  """
  for entry in crd["spec"]["versions"]:
    if entry["name"] == version:
      return _closed(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
  raise KeyError(f"{crd['metadata']['name']} has no version {version!r}")


def validate(resource: dict, crd_path: str) -> None:
  """Validates ``resource`` against the CRD in the YAML file ``crd_path``.

  Raises:
    jsonschema.ValidationError: an unknown field, a wrong type or value.
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
