"""Byte-level coding of the artifact's tensor streams: where the nonzeros are (`positions`),
unsigned integers packed to a bit width (`bits`), and entropy codecs on whole streams
(`codecs`, with a canonical Huffman coder of our own in `huffman`). Pure data transforms on
numpy arrays and bytes: nothing here knows about models or files."""
