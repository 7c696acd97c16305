//! Strided copies: permute, narrow, concat, pad and their VJPs.
