"""The YAML reader of recipes and `--set` values. Two departures from PyYAML's safe_load, both
towards what a researcher expects from YAML 1.2 (HF, Hydra, OmegaConf):

- `5e-4` and `1e5` are numbers. YAML 1.1 wants a dot (`5.0e-4`) and read them as text, so the
  most common way to write a learning rate was refused.
- A key given twice in one mapping is an error naming it and both lines. safe_load kept the last
  silently: a second `optim:` section dropped the first one's `lr`. Keys a merge (`<<: *base`)
  brings in may still be overridden, as YAML intends.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

_FLOAT = "tag:yaml.org,2002:float"
# YAML 1.1's float with the dot made optional before an exponent (YAML 1.2's core schema).
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                            |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
                            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                            |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                            |[-+]?\.(?:inf|Inf|INF)
                            |\.(?:nan|NaN|NAN))$""", re.X)


class RecipeLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # an unhashable key: the base constructor names it
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice in one mapping (lines {seen[key]} and {line}); "
                        "YAML would keep the last silently: remove one", key_node.start_mark)
                seen[key] = line
        return super().construct_mapping(node, deep)


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
RecipeLoader.add_implicit_resolver(_FLOAT, _FLOAT_12, list("-+0123456789."))
RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, RecipeLoader.construct_mapping)


def load_yaml(text: str) -> Any:
    """`text` as a recipe reads it (yaml.YAMLError on bad input, as safe_load)."""
    return yaml.load(text, Loader=RecipeLoader)
