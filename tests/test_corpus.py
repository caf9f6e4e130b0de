import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from observe.errors import ObserveError
from observe.workload.corpus import DOMAINS, generate_corpus, generate_prompts

# Function words every English domain shares; excluded when comparing domain vocabularies.
_STOPWORD_TEXT = """
a about after all also an and any are as at be been before but by can could did do does for from
had has have he her his i if in into is it its may me my no not now of on or our out over she so
some such than that the their them then there these they this those to up was we were what when
which while who will with would you your
"""
STOPWORDS = set(_STOPWORD_TEXT.split())


def test_domains() -> None:
    assert DOMAINS == ("medical", "finance", "legal", "general")


@pytest.mark.parametrize("domain", DOMAINS)
def test_documents_are_single_lines_of_two_to_six_sentences(domain: str) -> None:
    docs = generate_corpus(domain, 300)
    assert len(docs) == 300
    for doc in docs:
        assert doc and "\n" not in doc and "{" not in doc and doc == doc.strip()
        # Sentence ends: terminal punctuation before a capitalised word or the end. One general
        # template is a question plus an answer, so each "?" may add a sentence.
        sentences = len(re.findall(r"[.!?](?= [A-Z0-9]|$)", doc))
        assert 2 <= sentences <= 6 + doc.count("?"), doc


def test_n_docs_honoured() -> None:
    assert generate_corpus("legal", 0) == []
    assert len(generate_corpus("finance", 7)) == 7
    # A longer run extends a shorter one with the same seed.
    assert generate_corpus("medical", 20)[:5] == generate_corpus("medical", 5)


def test_same_seed_identical_different_seed_different() -> None:
    for domain in DOMAINS:
        assert generate_corpus(domain, 50, seed=3) == generate_corpus(domain, 50, seed=3)
        assert generate_corpus(domain, 50, seed=3) != generate_corpus(domain, 50, seed=4)
        assert generate_prompts(domain, 20, seed=3) == generate_prompts(domain, 20, seed=3)


def test_identical_in_a_fresh_process() -> None:
    # A fresh interpreter gets a different hash() salt; output must not depend on it.
    code = (
        "from observe.workload.corpus import generate_corpus, generate_prompts;"
        "print(repr(generate_corpus('general', 30, seed=9) + generate_prompts('legal', 5)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout
    assert out.strip() == repr(
        generate_corpus("general", 30, seed=9) + generate_prompts("legal", 5)
    )


@pytest.mark.parametrize("domain", DOMAINS)
def test_prompts_are_short_document_openings(domain: str) -> None:
    prompts = generate_prompts(domain, 50)
    assert len(prompts) == 50
    assert all(4 <= len(p.split()) <= 10 and "\n" not in p for p in prompts)
    assert len(set(prompts)) > 25


def test_unknown_domain_and_negative_count() -> None:
    with pytest.raises(ObserveError, match=r"unknown domain 'sports'.*medical, finance, legal"):
        generate_corpus("sports", 3)
    with pytest.raises(ObserveError, match="unknown domain"):
        generate_prompts("Medical", 3)
    with pytest.raises(ObserveError, match="n_docs is -1"):
        generate_corpus("medical", -1)
    with pytest.raises(ObserveError, match="-2"):
        generate_prompts("medical", -2)


def _trigrams(doc: str) -> Counter[str]:
    text = doc.lower()
    return Counter(text[i : i + 3] for i in range(len(text) - 2))


def _unit(counts: Counter[str]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in counts.values()))
    return {k: v / norm for k, v in counts.items()}


def test_domains_are_separable_by_character_trigrams() -> None:
    centroids = {}
    for domain in DOMAINS:
        total: Counter[str] = Counter()
        for doc in generate_corpus(domain, 200, seed=0):
            total.update(_unit(_trigrams(doc)))
        centroids[domain] = _unit(total)

    correct = total_docs = 0
    for domain in DOMAINS:
        for doc in generate_corpus(domain, 50, seed=1):
            vec = _unit(_trigrams(doc))
            scores = {
                d: sum(w * c.get(g, 0.0) for g, w in vec.items()) for d, c in centroids.items()
            }
            correct += max(scores, key=scores.__getitem__) == domain
            total_docs += 1
    assert correct / total_docs >= 0.95


def _top_words(domain: str, k: int = 30) -> set[str]:
    words = Counter(
        w
        for doc in generate_corpus(domain, 200)
        for w in re.findall(r"[a-z]+", doc.lower())
        if w not in STOPWORDS
    )
    return {w for w, _ in words.most_common(k)}


def test_domain_vocabularies_barely_overlap() -> None:
    tops = {d: _top_words(d) for d in DOMAINS}
    for a in DOMAINS:
        for b in DOMAINS:
            if a != b:
                shared = tops[a] & tops[b]
                assert len(shared) < 10, (a, b, shared)
