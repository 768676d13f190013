"""tessera model classes (torch.nn.Modules over C++ modules)."""
from .clip import CLIPModel, CLIPTextModel, CLIPVisionModel
from .outputs import BaseModelOutputWithPooling, CLIPOutput, ModelOutput
from .pretrained import PreTrainedModel

__all__ = [
    "CLIPModel", "CLIPTextModel", "CLIPVisionModel", "ModelOutput", "CLIPOutput",
    "BaseModelOutputWithPooling", "PreTrainedModel",
]
