"""Adapter files in other libraries' layouts, both ways (minadapt's own format is Model.save_adapter's
default and lives in model.py): AdapterHub's directory (adapterhub.py) and PEFT's (peft.py).
`detect_format` says which a path holds; Model.load_adapter uses it."""
from .detect import detect_format
from .adapterhub import load_adapterhub, save_adapterhub
from .peft import load_peft, save_peft

__all__ = ["detect_format", "load_adapterhub", "save_adapterhub", "load_peft", "save_peft"]
