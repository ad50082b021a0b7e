#!/usr/bin/env python3
"""A SentencePiece BPE model (tokenizer.model) from a vocabulary list, one piece per line in id order.

    python3 sentencepiece_bpe_model.py mistral-7b-v0.1.txt /tmp/tokenizer.model

SentencePiece's BPE encoder merges, again and again, the adjacent pair whose concatenation is a
piece of the highest score; a BPE vocabulary lists its pieces in the order their merges were
learned, so a score falling with the id (-id) gives back the tokenizer the list came from. The
model is the one Llama/Mistral-style tokenizers ship: BPE, byte fallback (<0xHH> pieces),
identity normalizer, a dummy prefix space, whitespace kept; <unk> <s> </s> at ids 0-2.

The protobuf is written by hand (three messages, a dozen fields: the numbers are sentencepiece's
sentencepiece_model.proto), so the script needs nothing but Python.
"""
import struct
import sys


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_float(number, value):
    return varint(number << 3 | 5) + struct.pack("<f", value)


NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def piece_message(text, score, kind):
    return field_bytes(1, text.encode("utf-8")) + field_float(2, score) + field_varint(3, kind)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: sentencepiece_bpe_model.py VOCABULARY OUT")
    with open(sys.argv[1], "rb") as f:
        pieces = f.read().decode("utf-8").split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    model = bytearray()
    for i, p in enumerate(pieces):
        if p == "<unk>":
            kind, score = UNKNOWN, 0.0
        elif p in ("<s>", "</s>"):
            kind, score = CONTROL, 0.0
        elif len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            kind, score = BYTE, 0.0
        else:
            kind, score = NORMAL, -float(i)
        model += field_bytes(1, piece_message(p, score, kind))
    trainer = (field_varint(3, 2)                 # model_type: BPE
               + field_varint(4, len(pieces))     # vocab_size
               + field_varint(35, 1)              # byte_fallback
               + field_varint(40, pieces.index("<unk>"))
               + field_varint(41, pieces.index("<s>"))
               + field_varint(42, pieces.index("</s>"))
               + field_varint(43, -1))            # pad_id: none
    normalizer = (field_bytes(1, b"identity")
                  + field_varint(3, 1)            # add_dummy_prefix
                  + field_varint(4, 0)            # remove_extra_whitespaces: no
                  + field_varint(5, 1))           # escape_whitespaces (spaces as U+2581)
    model += field_bytes(2, trainer) + field_bytes(3, normalizer)
    with open(sys.argv[2], "wb") as f:
        f.write(model)


if __name__ == "__main__":
    main()
