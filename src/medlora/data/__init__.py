"""Data: a question/answer CSV (MedQuAD ships in this folder) -> grouped splits -> tokenized examples."""
