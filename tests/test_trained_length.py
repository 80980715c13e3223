"""An adapter reads texts cut where it was trained to see them: `train --max-length 256` records 256
in the adapter's task record, and predict, eval and serve cut that adapter's texts at 256 while
other tasks in the same model (and the same served batch) keep theirs."""
import json

import numpy as np

from minadapt.model import load_model
from minadapt.predict import outputs, predict_texts, tokenizer_for
from minadapt.serve.batcher import answer, answer_rows

LONG = "a gorgeous , witty , seductive movie that never lets go of its audience " * 10


def test_an_adapter_reads_texts_at_the_length_it_was_trained_on(checkpoint_dir):
    model = load_model(checkpoint_dir, dtype="float64")
    rng = np.random.default_rng(0)
    for name in ("short", "default"):
        model.add_adapter(name, bottleneck=4, seed=1)
        model.add_classification_head(name, num_labels=2, seed=2)
        for k in [k for k in model.params if f".adapters.{name}." in k and "adapter_up" in k]:
            model.params[k] = model.params[k] + 0.5 * rng.standard_normal(model.params[k].shape)
    model.metadata.setdefault("short", {})["task"] = json.dumps({"name": "sst2", "max_length": 8})
    assert tokenizer_for(model, "default") is model.tokenizer

    at_8 = outputs(model, "short", *model.tokenizer.cutting_at(8).ids_and_types([LONG]))
    at_128 = outputs(model, "short", *model.tokenizer.ids_and_types([LONG]))
    assert len(model.tokenizer.ids([LONG])[0]) == 128  # the text is longer than both lengths
    assert not np.allclose(at_8, at_128, atol=1e-3)  # so the length read at matters

    assert predict_texts(model, "short", [LONG])[0][1] == at_8.max()
    np.testing.assert_allclose(answer(model, "short", [LONG]), at_8, rtol=0, atol=1e-12)
    mixed = answer_rows(model, ["short", "default"], [LONG, LONG])  # one forward, two lengths
    np.testing.assert_allclose(mixed[0], at_8[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mixed[1], outputs(model, "default", *model.tokenizer.ids_and_types([LONG]))[0],
                               rtol=0, atol=1e-9)
    assert model.tokenizer.max_length == 128  # the model's own tokenizer is unchanged
