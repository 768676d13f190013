"""tessera model classes (torch.nn.Modules over C++ modules)."""
from .clip import CLIPModel, CLIPTextModel, CLIPVisionModel
from .mae import ViTMAEForPreTraining, ViTMAEModel
from .outputs import BaseModelOutputWithPooling, CLIPOutput, ModelOutput
from .pretrained import PreTrainedModel

__all__ = [
    "CLIPModel", "CLIPTextModel", "CLIPVisionModel", "ViTMAEForPreTraining", "ViTMAEModel", "ModelOutput", "CLIPOutput",
    "BaseModelOutputWithPooling", "PreTrainedModel",
]
