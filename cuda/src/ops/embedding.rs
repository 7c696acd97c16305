//! Embedding gather and its scatter-add VJP.
