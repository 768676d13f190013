"""tessera model classes (torch.nn.Modules over C++ modules)."""
from .beit import BeitForMaskedImageModeling, BeitModel
from .clip import CLIPModel, CLIPTextModel, CLIPVisionModel
from .llama import LlamaForCausalLM
from .llava import LlavaForConditionalGeneration
from .mae import ViTMAEForPreTraining, ViTMAEModel
from .outputs import BaseModelOutputWithPooling, CLIPOutput, ModelOutput
from .pretrained import PreTrainedModel
from .quantizer import NormEMAQuantizer
from .vqkd import VQKD

__all__ = [
    "BeitForMaskedImageModeling", "BeitModel", "CLIPModel", "CLIPTextModel", "CLIPVisionModel", "LlamaForCausalLM", "LlavaForConditionalGeneration", "ViTMAEForPreTraining", "ViTMAEModel", "ModelOutput", "CLIPOutput",
    "BaseModelOutputWithPooling", "PreTrainedModel", "NormEMAQuantizer", "VQKD",
]
