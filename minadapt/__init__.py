"""minadapt: bottleneck adapters on a BERT encoder written from scratch in NumPy.

Every layer is a forward/backward pair in `minadapt.nn`; `minadapt.bert` composes them into the
encoder; `minadapt.model.Model` adds adapters, a head, and `loss_and_grads`.
"""
from .config import BertConfig
from .errors import MinadaptError
from .model import AdapterConfig, HeadConfig, Model, load_model

__version__ = "0.1.0"
__all__ = ["AdapterConfig", "BertConfig", "HeadConfig", "MinadaptError", "Model", "load_model"]
