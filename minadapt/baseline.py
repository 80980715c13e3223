"""A classical baseline for `minadapt compare --baseline`: TF-IDF features and logistic regression.

    x = tf-idf(text)           word uni- and bigrams (in at least 2 training texts, 1 when there
                               are under 1,000), sublinear tf,
                               l2-normalised rows; a pair task joins its two texts with " [SEP] "
    p(y | x) = softmax(W x + b)   scikit-learn's LogisticRegression (L2, strength 1/C)

It trains on the same examples as compare's runs (the training set less the held-out slice), picks
C on that slice, and reports the dev metrics at that C. No seed: the fit is deterministic.
scikit-learn is an optional extra (`pip install 'minadapt[baseline]'`); without it the row is
skipped with one line. Regression tasks get no baseline row.
"""
from __future__ import annotations

import time

CS = (1.0, 10.0, 100.0)  # the regularisation strengths tried


def _texts(examples) -> list[str]:
    if examples.pairs is None:
        return list(examples.texts)
    return [f"{a} [SEP] {b}" for a, b in zip(examples.texts, examples.pairs)]


def tfidf_logreg(task, train, validation, dev) -> dict | None:
    """The baseline's row (as compare's rows: config, dev_metric, dev_score, dev, trainable_params,
    train_s; and C, each C's validation score, the scikit-learn version), or None (said why)."""
    if task.regression:
        print("baseline: skipped (a regression task; the baseline classifies)")
        return None
    try:
        import sklearn
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("baseline: skipped (needs scikit-learn: pip install 'minadapt[baseline]')")
        return None
    from .tasks import evaluate

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train.labels) >= 1000 else 1,
                                 sublinear_tf=True)
    x_train = vectorizer.fit_transform(_texts(train))
    x_val, x_dev = vectorizer.transform(_texts(validation)), vectorizer.transform(_texts(dev))
    scores, fits = {}, {}
    for c in CS:
        fits[c] = LogisticRegression(C=c, max_iter=2000).fit(x_train, train.labels)
        metrics = evaluate(task, fits[c].predict(x_val), validation.labels)
        scores[c] = metrics[next(iter(metrics))]
    best = max(CS, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    seconds = time.perf_counter() - t0
    dev_metrics = evaluate(task, fits[best].predict(x_dev), dev.labels)
    first = next(iter(dev_metrics))
    model = fits[best]
    return {"config": "tfidf-logreg", "method": "tfidf-logreg", "dev_metric": first,
            "dev_score": dev_metrics[first], "dev": dev_metrics, "C": best,
            "validation_by_C": {f"{c:g}": v for c, v in scores.items()},
            "trainable_params": int(model.coef_.size + model.intercept_.size),
            "features": len(vectorizer.vocabulary_), "train_s": seconds,
            "sklearn": sklearn.__version__}
