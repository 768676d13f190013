"""The YAML reader of recipes and `--set` values: PyYAML's safe loader with YAML 1.2's core
schema for plain scalars, which is what a researcher expects from HF, Hydra or OmegaConf files,
and one check safe_load lacks:

- Numbers as YAML 1.2 (and JSON, and Python) read them: `5e-4`, `1e5`, `-.5` are floats (YAML
  1.1 wants a dot and a signed exponent, so the most common way to write a learning rate was
  text); `010` is ten, not eight; `1:30` is text, not 90.
- Only true / false are booleans (YAML 1.1 also took yes, no, on, off, y, n).
- A key given twice in one mapping, a merged one (`<<: {...}`) included, is an error naming it and
  both lines. safe_load kept the last silently: a second `optim:` section dropped the first's
  `lr`. Keys a merge brings in may still be overridden, as YAML intends.
- Aliases may not expand the recipe past MAX_VALUES values, nor refer to themselves: a 400-byte
  file of nested aliases read in milliseconds, then stalled the run for hours as its recipe was
  written out (recipe.json, tracking), each alias copied in full.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

_INT, _FLOAT, _BOOL = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"
_RESOLVERS = {
    _BOOL: (re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    _INT: (re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$"), list("-+0123456789")),
    _FLOAT: (re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
                            |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                            |[-+]?\.(?:inf|Inf|INF)
                            |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789.")),
}


def _check_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    seen = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # its own keys are checked too
            merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in merged:
                if isinstance(sub, yaml.MappingNode):
                    _check_duplicates(loader, sub)
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue  # an unhashable key: the base constructor names it
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice in one mapping (lines {seen[key]} and {line}); "
                "YAML would keep the last silently: remove one", key_node.start_mark)
        seen[key] = line


MAX_VALUES = 200_000  # a recipe holds hundreds


def _check_expanded_size(root: yaml.Node) -> None:
    """The number of values the document holds once every alias is copied out, counted per node
    (an alias is the node it names, so shared nodes are counted once per use, not walked again)."""
    sizes, open_nodes = {}, set()

    def size(node):
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise yaml.composer.ComposerError(None, None, "an alias refers to the node that holds it: the recipe "
                                              "would be infinite", node.start_mark)
        open_nodes.add(id(node))
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(id(node))
        if total > MAX_VALUES:
            raise yaml.composer.ComposerError(None, None, f"it holds more than {MAX_VALUES} values once its aliases "
                                              "are copied out: not a recipe", node.start_mark)
        sizes[id(node)] = total
        return total

    size(root)


class RecipeLoader(yaml.SafeLoader):
    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return self.construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(self, node)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node).replace("_", "")
        if text[:2] in ("0o", "0x"):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)  # decimal, leading zeros included (YAML 1.1 read 010 as octal)


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _RESOLVERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, (_regexp, _first) in _RESOLVERS.items():
    RecipeLoader.add_implicit_resolver(_tag, _regexp, _first)
RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, RecipeLoader.construct_mapping)
RecipeLoader.add_constructor(_INT, RecipeLoader.construct_yaml_int)


def load_yaml(text: str) -> Any:
    """`text` as a recipe reads it; yaml.YAMLError on bad input, ValueError when nested too deeply."""
    try:
        return yaml.load(text, Loader=RecipeLoader)
    except RecursionError:
        raise ValueError("the YAML is nested too deeply to read") from None
