"""minadapt: bottleneck adapters on a BERT encoder written from scratch in NumPy.

Every layer is a forward/backward pair in `minadapt.nn`; `minadapt.bert` composes them into the
encoder; `minadapt.model.Model` adds adapters, a head, and `loss_and_grads`.
"""
import os

# OpenBLAS's idle worker threads spin for ~0.1 s after each multi-threaded matmul before they
# sleep, burning a core that minadapt's shard processes (parallel.py) want next. A short timeout lets
# them sleep at once. It only takes effect if NumPy has not been imported yet (as in the CLI); a value
# already set by the user is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
from .config import BertConfig
from .errors import MinadaptError
from .model import AdapterConfig, HeadConfig, Model, load_model

__version__ = "0.1.0"
__all__ = ["AdapterConfig", "BertConfig", "HeadConfig", "MinadaptError", "Model", "load_model"]
