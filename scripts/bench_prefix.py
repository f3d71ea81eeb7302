"""Time to first token of each turn, with the server's prompt cache against without it.

Every turn sends the whole conversation again; what was sent before is sent byte for byte
the same (each question keeps the note of its own time, `voicechat.now`), so llama.cpp's
server reuses its cache of that prefix and only reads the new question. This measures it on
the real server: a conversation of ``--turns`` turns with a long system prompt, through
voicechat's own backend and `Conversation`; after each turn, the same request again with
``cache_prompt: false`` (llama.cpp's own field: the whole prompt is read again; the baseline,
what every turn would cost if the prefix changed, e.g. a time note in the system prompt), in
the same run and through the same SDK. (Filling the one slot with another prompt first is no
baseline: the server keeps earlier prompts in RAM too, ``--cache-ram``, and restores them.)

    scripts/e2e_real_server.sh --serve -- python scripts/bench_prefix.py

(the server: SmolLM2-135M-Instruct, one slot, 2048 tokens of context; OPENAI_BASE_URL set).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicechat.backends import create_backend
from voicechat.chat import Conversation
from voicechat.settings import GenerationSettings

FACTS = (
    "The Jetson Orin Nano has 8 GB of memory shared by the CPU and the GPU.",
    "Replies are spoken while the model is still writing them.",
    "The user may speak Chinese, English or both in one sentence.",
    "Keep answers short: two or three sentences, no lists, no Markdown.",
    "If the user interrupts, stop and listen to the new question.",
    "Numbers are said as words a listener can follow, units spelled out.",
    "The assistant runs on a desk in a living room, next to a small speaker.",
    "Never read code aloud; say that code was shown on the screen instead.",
)
QUESTIONS = (
    "What is the capital of France?",
    "And how many people live there?",
    "Name one famous museum in that city.",
    "What can I see inside it?",
    "How long should I plan for a visit?",
    "Is it open on Mondays?",
)
LEGEND = {
    "turn 1 s": "the first turn: nothing to reuse yet (median time to first token)",
    "later warm s": "turns 2 and on, the cache kept: median time to first token",
    "later cold s": "the same requests with cache_prompt false (the baseline), median",
    "warm/cold": "median of the later turns' ratios",
    "prompt words": "words in the last turn's request (system prompt, history, question)",
}


def long_prompt(words: int, seed: int) -> str:
    """A system prompt of about ``words`` words made of the facts, in an order of its own."""
    rng = random.Random(seed)
    text: list[str] = []
    while sum(len(s.split()) for s in text) < words:
        text.append(rng.choice(FACTS))
    return " ".join(text)


class Quiet:
    """A reply view that shows nothing."""

    def write(self, delta: str) -> None:
        pass

    def end(self) -> None:
        pass


def uncached(messages: list[dict[str, str]], gen: GenerationSettings) -> float:
    """Seconds to the first token of ``messages`` with the server's cache not used."""
    import openai

    client = openai.OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="none")
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="local-model",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        max_tokens=gen.max_tokens,
        temperature=gen.temperature,
        seed=gen.seed,
        extra_body={"cache_prompt": False},
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - started
    client.close()
    assert first is not None, "the server sent no token"
    return first


def run(args: argparse.Namespace) -> dict[str, Any]:
    from voicechat import profile as profiles_mod

    prof = profiles_mod.load("local-openai").profile
    backend = create_backend(prof.backend, profiles_mod.api_key(prof.backend))
    gen = GenerationSettings(temperature=0.0, max_tokens=args.max_tokens, seed=1)
    conversation = Conversation(backend, gen, prof.chunking, long_prompt(args.words, 0))
    turns: list[dict[str, float]] = []
    try:
        for question in QUESTIONS[: args.turns]:
            turn = conversation.ask(question, Quiet())
            assert turn.outcome is not None and turn.outcome.first_token_s is not None
            sent = conversation.messages()[:-1] if turn.reply else conversation.messages()
            cold = uncached(sent, gen)
            turns.append({"warm": turn.outcome.first_token_s, "cold": cold})
            words = sum(len(m["content"].split()) for m in sent)
            print(f"turn {len(turns)}: {words} words sent; first token "
                  f"{turn.outcome.first_token_s:.3f} s with the cache, {cold:.3f} s without "
                  f"(ratio {turn.outcome.first_token_s / cold:.2f})")  # fmt: skip
    finally:
        backend.close()
    return {"turns": turns, "prompt_words": words}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5, help="turns of the conversation")
    parser.add_argument("--words", type=int, default=700, help="words in the system prompt")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per reply")
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    if not os.environ.get("OPENAI_BASE_URL"):
        print("run it beside a server: scripts/e2e_real_server.sh --serve -- python "
              "scripts/bench_prefix.py", file=sys.stderr)  # fmt: skip
        return 2
    started = benchlib.start()
    results = run(args)
    later = results["turns"][1:]
    summary = {
        "turn 1 s": results["turns"][0]["warm"],
        "later warm s": benchlib.median(t["warm"] for t in later),
        "later cold s": benchlib.median(t["cold"] for t in later),
        "warm/cold": benchlib.median(t["warm"] / t["cold"] for t in later),
        "prompt words": results["prompt_words"],
    }
    print(", ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}"
                    for k, v in summary.items()))  # fmt: skip
    benchlib.finish(
        "prefix",
        args,
        doc=__doc__,
        started=started,
        packages=("openai", "xllamacpp"),
        summary=summary,
        legend=LEGEND,
        results=results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
