"""Hiera models: backbone/classifier, video MAE, named constructors, pretrained-weight loading."""
from hiera_video.models.hiera import Hiera, HieraBackbone
from hiera_video.models.mae import MaskedAutoencoderHiera
from hiera_video.models.registry import create_model, list_models, model_spec
from hiera_video.models.weights import LoadReport, load_pretrained, load_state_file

__all__ = [
    "Hiera",
    "HieraBackbone",
    "MaskedAutoencoderHiera",
    "create_model",
    "list_models",
    "model_spec",
    "LoadReport",
    "load_pretrained",
    "load_state_file",
]
