"""Data: reading files (`files`), text corpora (`corpus`), the tokenization cache (`cache`), streams
(`stream`), batch order (`sampler`), padding (`collate`) and training tokenizers (`tokenizer_train`)."""
