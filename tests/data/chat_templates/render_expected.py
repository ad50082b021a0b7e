#!/usr/bin/env python3
"""Renders every tests/data/chat_templates/*.jinja for a fixed set of conversations and writes
expected/<template>.<case>.txt (or .error when the template refuses the conversation through
raise_exception), plus expected/cases.json: the conversations, tokens and variables used, which
tests/unit/chat_template_test.cc reads so that both sides render the same inputs.

  --renderer transformers  the environment transformers builds (needs transformers installed)
  --renderer jinja2        the same environment built here with jinja2 alone

The jinja2 mode mirrors transformers' chat_template_utils: ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks and loopcontrols; globals raise_exception and strftime_now; its own
tojson filter (json.dumps, ensure_ascii=False); render(messages, tools=None, documents=None,
add_generation_prompt, bos_token, eos_token, **extras).
"""
import argparse
import json
import os
import sys
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "expected")

# Content with what templates react to: surrounding whitespace (| trim), a quote, a newline,
# non-ASCII text, and a reasoning block (templates that drop '</think>' prefixes).
SYSTEM = {"role": "system", "content": "You are a helpful assistant.\nAnswer briefly. "}
USER1 = {"role": "user", "content": "  What's 2+2? Größe: 日本語\n"}
ASSISTANT1 = {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 4."}
USER2 = {"role": "user", "content": "And \"3+3\"?"}

CONVERSATIONS = {
    "user": [USER1],
    "system_user": [SYSTEM, USER1],
    "multi_turn": [USER1, ASSISTANT1, USER2],
    "system_multi_turn": [SYSTEM, USER1, ASSISTANT1, USER2],
}

# Fixed special tokens per template (default for the rest); the C++ test reads them from cases.json.
DEFAULT_TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}
TOKENS = {
    "meta-llama-Llama-3.2-3B-Instruct": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "google-gemma-2-2b-it": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "cz-gemma-it": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "Qwen-QwQ-32B": {"bos_token": "", "eos_token": "<|im_end|>"},
    "Qwen-Qwen3-0.6B": {"bos_token": "", "eos_token": "<|im_end|>"},
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": {"bos_token": "<｜begin▁of▁sentence｜>",
                                                 "eos_token": "<｜end▁of▁sentence｜>"},
}
# Extra string variables passed to every template: a fixed date, so that templates which print
# today's date (Llama 3.x) render the same on every day.
EXTRAS = {"date_string": "26 Jul 2024"}


def jinja2_renderer():
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now

    def render(source, messages, add_generation_prompt, variables):
        return env.from_string(source).render(messages=messages, tools=None, documents=None,
                                              add_generation_prompt=add_generation_prompt, **variables)

    return render, jinja2.exceptions.TemplateError


def transformers_renderer():
    # The function names moved between transformers versions: probe the newer one first.
    import transformers
    from jinja2.exceptions import TemplateError
    from transformers.utils import chat_template_utils as ctu
    print(f"transformers {transformers.__version__}", file=sys.stderr)

    if hasattr(ctu, "render_jinja_template"):
        def render(source, messages, add_generation_prompt, variables):
            out, _ = ctu.render_jinja_template(conversations=[messages], chat_template=source,
                                               add_generation_prompt=add_generation_prompt, **variables)
            return out[0]
    elif hasattr(ctu, "_compile_jinja_template"):
        def render(source, messages, add_generation_prompt, variables):
            return ctu._compile_jinja_template(source).render(
                messages=messages, tools=None, documents=None,
                add_generation_prompt=add_generation_prompt, **variables)
    else:
        sys.exit("this transformers has neither render_jinja_template nor _compile_jinja_template")
    return render, TemplateError


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renderer", choices=["transformers", "jinja2"], required=True)
    args = ap.parse_args()
    render, template_error = transformers_renderer() if args.renderer == "transformers" else jinja2_renderer()

    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith((".txt", ".error")):
            os.remove(os.path.join(OUT, f))
    names = sorted(f[:-len(".jinja")] for f in os.listdir(HERE) if f.endswith(".jinja"))
    manifest = {"renderer": args.renderer, "conversations": CONVERSATIONS, "extras": EXTRAS, "templates": {}}
    for name in names:
        with open(os.path.join(HERE, name + ".jinja"), encoding="utf-8", newline="") as f:
            source = f.read()
        tokens = TOKENS.get(name, DEFAULT_TOKENS)
        manifest["templates"][name] = tokens
        for conv_name, messages in CONVERSATIONS.items():
            for gen in (False, True):
                case = f"{conv_name}.{'gen' if gen else 'nogen'}"
                path = os.path.join(OUT, f"{name}.{case}")
                try:
                    text = render(source, messages, gen, {**tokens, **EXTRAS})
                    suffix = ".txt"
                except template_error as e:  # the template refused this conversation
                    text = str(e)
                    suffix = ".error"
                with open(path + suffix, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(names)} templates x {2 * len(CONVERSATIONS)} cases -> {OUT}")


if __name__ == "__main__":
    main()
