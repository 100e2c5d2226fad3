#!/usr/bin/env python3
"""Reference outputs of the Hugging Face `tokenizers` library for the Swift tokenizer tests.

For every text below and each real tokenizer in Tests/Fixtures/tokenizers/<name>/tokenizer.json,
records encode() ids without and with special tokens and the decoded text, plus decode()
of some hand-picked id sequences (invalid UTF-8, special tokens, unknown ids). The Swift
tests (Tests/TokenizationTests) compare against the JSON written to
Tests/Fixtures/tokenizer-reference/<name>.json, so running them needs no Python.

It also trains three small synthetic tokenizers (written next to the expectations as
synthetic-*.tokenizer.json) that exercise components the Llama files do not use: added-token
lstrip/rstrip/single_word/normalized, NFKC and regex Replace normalizers, Digits, Split
behaviours, ByteLevel with the GPT-2 regex and add_prefix_space, Metaspace with split,
legacy "a b" merges, fuse_unk, ignore_merges, continuing_subword_prefix/end_of_word_suffix,
a null decoder and Sequence/TemplateProcessing post-processors, plus a copy of the tiny
SentencePiece fixture whose special tokens are `normalized: true`.

BPE training is not deterministic (hash-map order decides ties), so existing synthetic
tokenizer files are kept and only the expectations are recomputed; pass --retrain to
train them again.

The embedded model's tokenizer (models/default/tokenizer.json, trained by `layerskip
train-tokenizer`) is checked the same way on TEXTS plus pieces of Python files that it never saw
(the model's held-out files), so that HF `tokenizers` and this engine provably read it identically:
pass --python-files LIST (then only that expectation file is written), a file naming one source file per line (e.g. the output of
`layerskip eval --model default --config models/default/train.yaml --list-files`).

Usage:  pip install tokenizers && python3 scripts/tokenizer-reference.py [--retrain] [--python-files LIST]
"""
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZERS = ["llama3", "llama2"]

PYTHON_CODE = '''import os

class Stack:
    """A tiny LIFO."""

    def __init__(self):
        self._items = []

    def push(self, x):
        self._items.append(x)  # O(1)
'''

C_CODE = '''#include <stdio.h>

int main(int argc, char **argv) {
\tfor (int i = 0; i < argc; ++i) {
\t\tprintf("%d: %s\\n", i, argv[i]);
\t}
\treturn 0;
}
'''

SWIFT_CODE = '''public struct Point: Hashable {
    public var x: Double
    public var y: Double

    public func distance(to other: Point) -> Double {
        let dx = x - other.x, dy = y - other.y
        return (dx * dx + dy * dy).squareRoot()
    }
}
'''

TEXTS = [
    # empty and whitespace
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "   \t\t  \n\n\n",
    "trailing spaces   ",
    "trailing newline\n",
    "tabs\tbetween\twords",
    "line one\r\nline two\r\nline three",
    "mixed\r\nline\rendings\n\r",
    "   leading spaces",
    "a  b   c    d     e",
    " \n \n ",
    # plain prose
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    # contractions
    "can't won't I'm you'll they'd we've she's",
    "CAN'T WON'T I'M YOU'LL THEY'D WE'VE SHE'S",
    "It'S a 'LL test 'Ve 'D 'M 'T",
    "rock 'n' roll, 'quoted', ''double''",
    "\u2019s curly apostrophe don\u2019t",
    "'\u017f long s and 'K kelvin",
    # numbers
    "0",
    "42",
    "1234567890",
    "3.14159 2.71828 -1e-9 +6.022e23",
    "12345678901234567890123456789012345678901234567890",
    "Call 555-0123 or +1 (800) 123-4567 by 2024-12-31.",
    "\u0661\u0662\u0663 \u00bd \u00b2 \u2167",
    # code
    PYTHON_CODE,
    C_CODE,
    SWIFT_CODE,
    "x=1;y=2;z=x*y",
    "if (a <= b && c != d) { return a->b[0]; }",
    "    indented    spaces",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "https://example.com/path?query=1&other=two#frag",
    # accents and combining marks
    "\u00dcn\u00efc\u00f6d\u00e9 fa\u00e7ade na\u00efve caf\u00e9",
    "Unicode fac\u0327ade nai\u0308ve cafe\u0301",
    "e\u0301 e\u0300\u0301\u0302 a\u030a",
    "\u00c5ngstr\u00f6m \u212bngstr\u00f6m",
    "\ufb01nance \ufb02ow \u2460 \uff21\uff22\uff23 \u3371",
    # CJK, Arabic, other scripts
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435.",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "Mixed English \u548c\u4e2d\u6587 and \u0627\u0644\u0639\u0631\u0628\u064a\u0629 text",
    # emoji
    "\U0001F600\U0001F44D\U0001F3FD \u2713 \u2211 \u222b",
    "family: \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 done",
    "flags: \U0001F1FA\U0001F1F8 \U0001F1EF\U0001F1F5 \U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",
    "\u2764\ufe0f \U0001F525\U0001F525\U0001F525",
    "\U0001F9D1\U0001F3FB\u200D\U0001F4BB coding",
    # special-token strings in text
    "<|begin_of_text|>Hello<|end_of_text|>",
    "<|begin_of_text|> literal special?",
    "text <|eot_id|> more <|start_header_id|>user<|end_header_id|>",
    "<s>Hello</s> <s> world </s>",
    "<unk> unknown <s><s>",
    "< s> <|begin_of_text| > <|not_a_token|>",
    "x <s> y",
    "<s>",
    # byte-fallback-looking strings
    "<0x41> <0xE4><0xB8><0xAD> <0x0A>",
    "\u2581leading meta symbol and mid\u2581dle",
    # odd characters
    "replacement \ufffd char \ufffd\ufffd",
    "bom \ufeff zero\u200bwidth \u200c\u200d joiners",
    "private \ue000 use and \U0010FFFD plane 16 and \uffff",
    "controls \x00 \x01 \x07 \x1b[0m \x7f",
    "vt \x0b ff \x0c fs \x1c gs \x1d us \x1f nel \x85",
    "nbsp\u00a0and\u3000ideographic\u2003em\u2009thin",
    "line\u2028separator\u2029paragraph",
    "soft\u00adhyphen",
    # long words and repetition
    "a" * 40,
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious" * 4,
    "x" * 300,
    "ab" * 150,
    "!!!!!!!!????????........",
    "\u4e2d" * 30,
    # markdown
    "# Title\n\n* item one\n* item two\n\n```python\nprint('hi')\n```\n",
    "| col | col |\n|-----|-----|\n| 1   | 2   |",
]

# Decode-only cases: (description, ids as token strings or ints, resolved per tokenizer).
def decode_cases(tok):
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    cases = []

    def ids_of(tokens):
        ids = []
        for t in tokens:
            if isinstance(t, int):
                ids.append(t)
            else:
                i = tok.token_to_id(t)
                if i is None:
                    return None
                ids.append(i)
        return ids

    def byte_tokens_bytelevel(bs):
        table = bytes_to_unicode()
        return ["".join(table[b] for b in [x]) for x in bs]

    def byte_tokens_fallback(bs):
        return ["<0x%02X>" % b for b in bs]

    byte_tokens = byte_tokens_fallback if tok.token_to_id("<0x41>") is not None else byte_tokens_bytelevel
    sequences = [
        byte_tokens([0xE4, 0xB8, 0xAD]),              # valid 3-byte char
        byte_tokens([0xE4, 0xB8]),                    # truncated
        byte_tokens([0xE4, 0xB8, 0xAD, 0xE4]),        # valid char then truncated
        byte_tokens([0xF0, 0x9F, 0x41]),              # truncated 4-byte then ASCII
        byte_tokens([0xED, 0xA0, 0x80]),              # encoded surrogate
        byte_tokens([0xFF, 0xFE, 0x41, 0x80]),        # invalid bytes
        byte_tokens([0xC3]) + [tok.encode(" world", add_special_tokens=False).ids[0]],
        [0, 1, 2, 3],
        [vocab_size + 5, 1, vocab_size * 10],
        [-1 + vocab_size],
    ]
    for seq in sequences:
        ids = ids_of(seq)
        if ids is None:
            continue
        cases.append(ids)
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special][:3]
    mixed = []
    for s in specials:
        mixed.append(tok.token_to_id(s))
        mixed.extend(tok.encode(" and more", add_special_tokens=False).ids)
    cases.append(mixed)
    cases.append(tok.encode("  double space start", add_special_tokens=False).ids[::-1])
    return [
        {
            "ids": ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        }
        for ids in cases
    ]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


SYNTHETIC_TEXTS = [
    "a <mask> b", "a<mask>b", "a   <mask>", "<mask>", "  <mask>  x",
    "x <r>   y", "<r>\n\nz", "<r><mask>", "a <r> <mask> b",
    "cat concat cats _cat cat_ (cat) CAT cat", "the cat sat", "cat",
    "fix \ufb01x fixes prefix", "\ufb01", "FIX fix",
    "<s> and </s> and <unk>", "<0x41><0xE4>",
    "12-34--56 - 7", "well-known state-of-the-art", "x--y---z",
]

TRAIN_CORPUS = TEXTS + SYNTHETIC_TEXTS + [
    "The cat sat on the mat. Cats and dogs are friends; a cat is not a dog.",
    "State-of-the-art tokenizers split words into well-known pieces.",
    "def main():\n    return 0\n",
] * 3


def train(model, pre_tokenizer, normalizer, decoder, vocab_size, special_tokens, trainer_kwargs=None):
    from tokenizers import trainers
    tok = Tokenizer(model)
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  **(trainer_kwargs or {}))
    tok.train_from_iterator(TRAIN_CORPUS, trainer)
    return tok


SYNTHETIC = ["synthetic-a", "synthetic-b", "synthetic-c", "synthetic-d"]


def synthetic_tokenizers(retrain):
    """Builds the synthetic tokenizer.json files if needed; returns {name: path}."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, AddedToken, Regex

    ref_dir = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer-reference")
    paths = {name: os.path.join(ref_dir, name + ".tokenizer.json") for name in SYNTHETIC}
    if not retrain and all(os.path.exists(p) for p in paths.values()):
        return paths

    out = {}

    # A: byte-level BPE with added-token flags, NFKC + regex Replace, Digits and Split.
    a = train(
        models.BPE(),
        pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split("-", "merged_with_previous"),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        ]),
        normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"[ \t]+\n"), "\n")]),
        decoders.ByteLevel(),
        600,
        ["<s>", "</s>"],
        {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()},
    )
    a.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False)])
    a.add_special_tokens([AddedToken("<r>", rstrip=True, normalized=False)])
    a.add_tokens([AddedToken("cat", single_word=True, normalized=False)])
    a.add_tokens([AddedToken("\ufb01x", normalized=True)])
    a.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", a.token_to_id("<s>")), ("</s>", a.token_to_id("</s>"))]),
    ])
    doc = json.loads(a.to_str())
    # Older files write merges as "a b" strings; cover that form here.
    doc["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in doc["model"]["merges"]]
    out["synthetic-a"] = doc

    # B: SentencePiece-like: Metaspace(split), byte fallback, fuse_unk, ignore_merges.
    b = train(
        models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
        None,
        decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]),
        500,
        ["<unk>", "<s>", "</s>"],
        {"limit_alphabet": 60},
    )
    b.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", b.token_to_id("<s>"))])
    doc = json.loads(b.to_str())
    vocab = doc["model"]["vocab"]
    # Byte tokens only for part of the byte range, so some characters still fall back to <unk>.
    next_id = max(vocab.values()) + 1
    for byte in list(range(0x00, 0x80)) + list(range(0xC0, 0xF0)) + list(range(0x80, 0xC0)):
        name = "<0x%02X>" % byte
        if name not in vocab:
            vocab[name] = next_id
            next_id += 1
    doc["model"]["ignore_merges"] = True
    out["synthetic-b"] = doc

    # C: word-suffix BPE: continuing_subword_prefix, end_of_word_suffix, regex Split Removed,
    # no decoder (tokens joined by spaces), BOS/EOS template.
    c = train(
        models.BPE(unk_token="<unk>", continuing_subword_prefix="##", end_of_word_suffix="</w>"),
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\s+"), "removed"),
                                 pre_tokenizers.Split(Regex(r"[^\w\s]"), "isolated")]),
        normalizers.NFC(),
        None,
        400,
        ["<unk>", "<s>", "</s>"],
        {"continuing_subword_prefix": "##", "end_of_word_suffix": "</w>", "limit_alphabet": 80},
    )
    c.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", c.token_to_id("<s>")), ("</s>", c.token_to_id("</s>"))])
    out["synthetic-c"] = json.loads(c.to_str())

    # D: the legacy Llama 2 layout (Prepend/Replace normalizer) with special tokens marked
    # `normalized: true`, as in older Llama 2 exports: they are matched after normalization
    # and reported in normalized form.
    with open(os.path.join(ROOT, "Tests", "Fixtures", "tiny-spm-mha-bf16-sharded", "tokenizer.json"), encoding="utf-8") as f:
        doc = json.load(f)
    for token in doc["added_tokens"][:3]:
        token["normalized"] = True
    out["synthetic-d"] = doc

    for name, doc in out.items():
        with open(paths[name], "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=True, indent=1)
            f.write("\n")
    return paths


def python_pieces(list_file, per_file=3, chars=600):
    """Pieces of each listed file: its start, middle and end, `chars` characters each."""
    pieces = []
    for path in sorted(l.strip() for l in open(list_file, encoding="utf-8") if l.strip()):
        text = open(path, encoding="utf-8").read()
        if not text:
            continue
        for start in sorted({0, max(0, len(text) // 2 - chars // 2), max(0, len(text) - chars)})[:per_file]:
            pieces.append(text[start:start + chars])
    return pieces


def main():
    sources = {name: os.path.join(ROOT, "Tests", "Fixtures", "tokenizers", name, "tokenizer.json") for name in TOKENIZERS}
    sources.update(synthetic_tokenizers("--retrain" in sys.argv[1:]))
    python_texts = []
    if "--python-files" in sys.argv:
        # Only the embedded model's expectations: the other files stay as their tokenizers version wrote them.
        python_texts = python_pieces(sys.argv[sys.argv.index("--python-files") + 1])
        sources = {"default-model": os.path.join(ROOT, "models", "default", "tokenizer.json")}
    for name, path in sources.items():
        tok = Tokenizer.from_file(path)
        texts = TEXTS + (SYNTHETIC_TEXTS if name.startswith("synthetic") else []) + (python_texts if name == "default-model" else [])
        cases = []
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            with_special = tok.encode(text, add_special_tokens=True).ids
            cases.append({
                "text": text,
                "ids": ids,
                "ids_with_special": with_special,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_with_special": tok.decode(with_special, skip_special_tokens=False),
                "decoded_with_special_skipped": tok.decode(with_special, skip_special_tokens=True),
            })
        out = {
            "generator": "scripts/tokenizer-reference.py with tokenizers %s" % tokenizers.__version__,
            "tokenizer": os.path.relpath(path, os.path.join(ROOT, "Tests", "Fixtures")),
            "cases": cases,
            "decode_cases": decode_cases(tok),
        }
        dest = os.path.join(ROOT, "Tests", "Fixtures", "tokenizer-reference", name + ".json")
        with open(dest, "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=True, indent=1)
            f.write("\n")
        print("wrote %s (%d texts, %d decode cases)" % (dest, len(cases), len(out["decode_cases"])), file=sys.stderr)


if __name__ == "__main__":
    main()
