"""Text in, ids out: reading corpora, vocabularies (characters, bytes, BPE), the encoded-corpus cache, named corpora, and the batch layout of truncated BPTT."""
