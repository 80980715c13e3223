"""minadapt: bottleneck adapters on a BERT encoder written from scratch in NumPy.

Every layer is a forward/backward pair in `minadapt.nn` (the reference; `minadapt.fast` holds the
same ops made fast); `minadapt.bert` composes them into the encoder; `minadapt.model.Model` holds
one frozen backbone and any number of named adapters and heads.

    import minadapt
    model = minadapt.load_model()                       # all-MiniLM-L6-v2, fetched when missing
    model.add_adapter("sst2", bottleneck=64)
    model.add_classification_head("sst2", num_labels=2)
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, adapter="sst2")

Importing minadapt changes nothing in the process (no environment variables, no malloc settings):
the command line asks for those itself (cli.py).
"""
__version__ = "0.1.0"
__all__ = ["AdapterConfig", "BertConfig", "HeadConfig", "MinadaptError", "Model", "load_model"]


def __getattr__(name):
    # Loaded on first use, so that `import minadapt.cli` can set OpenBLAS's environment before NumPy
    # (which the model imports) is loaded.
    if name in ("AdapterConfig", "HeadConfig", "Model", "load_model"):
        from . import model

        return getattr(model, name)
    if name == "BertConfig":
        from .config import BertConfig

        return BertConfig
    if name == "MinadaptError":
        from .errors import MinadaptError

        return MinadaptError
    raise AttributeError(f"module 'minadapt' has no attribute {name!r}")
