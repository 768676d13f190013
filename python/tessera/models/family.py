"""The base of a family's model classes over its bound C++ module: built from a config dict (C++
fills in the defaults and checks it), `resolve_config` without building, gradient checkpointing."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ..config_json import config_json
from ..cpp_build import build_cpp
from ..cpp_module import CppModule
from .pretrained import PreTrainedModel, merge_config


class FamilyModel(CppModule, PreTrainedModel):
    _family: Any = None    # the family's submodule of tessera._C (resolve_config and the classes)
    _cpp_class: str = ""   # the bound C++ class in it

    def __init__(self, config: Optional[Dict[str, Any]] = None, *cpp_args):
        config = dict(config or {})
        super().__init__(build_cpp(getattr(self._family, self._cpp_class), config_json(config), *cpp_args))
        # merge_config drops an alias (image_token_id) of a key the resolved config holds
        self.config = merge_config(config, json.loads(self._cpp.config_json()))
        self.config["architectures"] = [self.architecture]

    @classmethod
    def _cpp_type(cls) -> Any:
        return getattr(cls._family, cls._cpp_class)

    @classmethod
    def resolve_config(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """The full config (C++ fills in the defaults and checks it) without building the model."""
        return json.loads(cls._family.resolve_config(config_json(config)))

    def _set_checkpointing(self, enable: bool) -> None:
        self._cpp.set_gradient_checkpointing(enable)
