"""tessera model classes (torch.nn.Modules over C++ modules). Every module of this package is
imported, so a family's `<family>.py` registers its classes (tessera.registry) and they are
exported here and from `tessera` by their names, with no list to edit."""
import importlib as _importlib
import pkgutil as _pkgutil
from typing import Dict as _Dict

from .. import registry as _registry
from .outputs import BaseModelOutputWithPooling, CLIPOutput, ModelOutput
from .pretrained import PreTrainedModel
from .quantizer import NormEMAQuantizer

for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module.name}")

#: tessera's registered model classes by name (extensions' classes are not exported here).
MODEL_CLASSES: _Dict[str, type] = {c.__name__: c for c in _registry.registered_classes()
                                   if c.__module__.startswith(__name__ + ".")}
globals().update(MODEL_CLASSES)

__all__ = [*MODEL_CLASSES, "ModelOutput", "CLIPOutput", "BaseModelOutputWithPooling", "PreTrainedModel",
           "NormEMAQuantizer"]
