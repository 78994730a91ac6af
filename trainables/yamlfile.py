"""YAML that people write (a study's spec, a trial's --config): PyYAML's safe loader, except that a
key given twice in one mapping is refused. PyYAML keeps the last one without a word, so a second
`beta: 9` below `beta: 2` would silently run 9; YAML itself says mapping keys are unique.

Here, not in `contract/` (standard library only), so that `study/` reads its specs with it too.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode

MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *base`: its keys may be overridden, that is its purpose


class DuplicateKeyError(yaml.YAMLError):
    """A mapping gives one key twice; the message names the key and both lines."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        _refuse_duplicates(self, node)  # before the merge keys are folded in
        return super().construct_mapping(node, deep)


def _refuse_duplicates(loader: yaml.SafeLoader, node: MappingNode) -> None:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            continue
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        try:
            if key in lines:
                raise DuplicateKeyError(f"key {key!r} is given twice (lines {lines[key]} and {line}); keep one")
            lines[key] = line
        except TypeError:  # an unhashable key: PyYAML's own error says so
            continue


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, refusing a key given twice in one mapping (DuplicateKeyError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
