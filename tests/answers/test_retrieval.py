"""BM25 retrieval: finds the record about the asked disease, cites distinct URLs, builds a RAG prompt."""

from __future__ import annotations

from medlora.answers.retrieval import BM25, context_prompt, sources, words


def record(question, answer, focus=None, url=None):
    r = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    if focus:
        r["focus"] = focus
    if url:
        r["url"] = url
    return r


RECORDS = [
    record("What is (are) Glaucoma?", "Glaucoma damages the optic nerve.", "Glaucoma", "https://nei.nih.gov/glaucoma"),
    record("What are the treatments for Glaucoma?", "Eye drops lower pressure.", "Glaucoma", "https://nei.nih.gov/glaucoma"),
    record("What is (are) Leukemia?", "Leukemia is a blood cancer.", "Leukemia", "https://cancer.gov/leukemia"),
    record("What causes Diabetic Retinopathy?", "High blood sugar harms retinal vessels.", "Diabetic Retinopathy",
           "https://nei.nih.gov/dr"),
    record("Who is at risk for Asthma?", "Children with allergies.", "Asthma"),
]


def test_finds_the_record_about_the_disease():
    index = BM25(RECORDS)
    hits = index.search("how is glaucoma treated", k=2)
    assert [h.index for h in hits] == [1, 0]
    assert index.search("leukemia symptoms", k=1)[0].record["focus"] == "Leukemia"


def test_unknown_words_find_nothing():
    assert BM25(RECORDS).search("zyzzyva quux", k=3) == []


def test_sources_are_distinct_urls_or_questions_without_a_url_column():
    index = BM25(RECORDS)
    assert sources(index.search("glaucoma", k=3)) == ["https://nei.nih.gov/glaucoma"]
    assert sources(index.search("asthma risk", k=1)) == ["Who is at risk for Asthma?"]


def test_context_prompt_holds_the_passages_and_the_question():
    hits = BM25(RECORDS).search("diabetic retinopathy", k=1)
    prompt = context_prompt("What causes diabetic retinopathy?", hits)
    assert "[1] High blood sugar harms retinal vessels." in prompt
    assert prompt.endswith("Question: What causes diabetic retinopathy?")


def test_stopwords_and_template_words_are_ignored():
    assert words("What is (are) Glaucoma ?") == ["glaucoma"]
