#!/usr/bin/env python3
"""Copy-heavy prompts for the lookup / hybrid drafting benchmark (scripts/bench-lookup.sh), built
from the default model's held-out Python files (never seen in training).

  copy-prompts.py rewrite FILES...      one JSONL prompt per file: its first function of 300-900
                                        characters, two blank lines, then that function's def line
                                        renamed NAME_v2 -- "write it again with one change".
  copy-prompts.py heads N FILES...      the file's text from its first def/class, N characters.
  copy-prompts.py repeat HEADS OUTS     HEADS (JSONL prompts) and OUTS (`layerskip generate --json`
                                        output for them): head + the model's own continuation + two
                                        blank lines + head again, so the answer repeats text of the
                                        prompt (what a summary, edit or completion of given text does).
"""
import json, re, sys

def first_function(src):
    lines = src.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)def (\w+)\(", lines[i])
        if not m:
            i += 1
            continue
        indent, j = len(m.group(1)), i + 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            j += 1
        body = "\n".join(lines[i:j]).rstrip()
        if 300 <= len(body) <= 900 and body.count("\n") >= 6:
            return body + "\n\n\n" + lines[i].replace("def " + m.group(2) + "(", "def " + m.group(2) + "_v2(", 1) + "\n"
        i = j
    return None

def main(argv):
    if argv[:1] == ["rewrite"]:
        for path in argv[1:]:
            text = first_function(open(path, encoding="utf-8", errors="replace").read())
            if text:
                print(json.dumps({"text": text}))
    elif argv[:1] == ["heads"]:
        n = int(argv[1])
        for path in argv[2:]:
            src = open(path, encoding="utf-8", errors="replace").read()
            starts = [i for i in (src.find("\ndef "), src.find("\nclass ")) if i >= 0]
            if starts:
                print(json.dumps({"text": src[min(starts) + 1:min(starts) + 1 + n]}))
    elif argv[:1] == ["repeat"] and len(argv) == 3:
        heads = [json.loads(l)["text"] for l in open(argv[1]) if l.strip()]
        outs = {}
        for line in open(argv[2]):
            if line.strip():
                r = json.loads(line)
                outs[r["index"]] = r["text"]
        for i, head in enumerate(heads):
            print(json.dumps({"text": head + outs[i] + "\n\n\n" + head}))
    else:
        sys.exit(__doc__)

main(sys.argv[1:])
