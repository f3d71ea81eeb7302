"""How soon the voice can start, and how fast the chunker runs: ours against the article's method.

    python scripts/bench_chunker.py [--tokens-per-s 8] [--repeat 2] [--skip-throughput]
                                    [--out DIR] [--no-save]

(a) Time to the first speakable piece. Each reply is streamed as simulated LLM tokens: one
token per Chinese character or punctuation mark, one per Latin word with its leading space,
up to three digits per token (how Qwen/Llama-style tokenizers cut such text; English comes
out at ~4-5 characters per token). At ``--tokens-per-s`` (8 is a 7B model on a Jetson Orin
Nano) that gives the simulated seconds until the first piece exists. "Ours" is the first
*spoken* utterance (chunker + cleanup, so a Markdown-only line does not count); "article" is
the first text the generator in ../shared/seeds/streaming-article.md yields (it cuts only at
。！？ found inside one delta; without them it yields only at the end of the reply).

Replies include unpunctuated Chinese (a 7B model sometimes drops the marks: the article's
method waits for the end; we cut in speaking time) and a mixed reply with a full-width mark
glued to English.

(b) Throughput and linearity: the time for 100 k and 1 M characters fed token by token, for
typical replies and for text without any punctuation; t(1M)/t(100k) near 10 means linear.

Besides printing, writes docs/benchmarks/chunker/<date>.json and regenerates
docs/benchmarks/chunker.md (scripts/benchlib.py).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import benchlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicechat.chunker import Chunker  # noqa: E402
from voicechat.settings import ChunkingSettings  # noqa: E402
from voicechat.speakable import Speakable  # noqa: E402

DATA = ROOT / "tests" / "data"
REPLIES = {
    "zh seed (article)": DATA / "corpus" / "seed_sky_zh.txt",
    "English": DATA / "chunker" / "en_sky.txt",
    "mixed zh/en": DATA / "chunker" / "mixed.txt",
    "Markdown-heavy": DATA / "chunker" / "markdown.md",
    "zh, no marks": DATA / "chunker" / "zh_unpunctuated.txt",
    "mixed, glued": DATA / "chunker" / "mixed_glued.txt",
}
_TOKEN = re.compile(r" ?[A-Za-z]+| ?\d{1,3}|\s+|.", re.DOTALL)


def tokens(text: str) -> list[str]:
    """Simulated LLM tokens (see the module docstring)."""
    return _TOKEN.findall(text)


def article_stream(deltas: Iterable[str]) -> Iterator[str]:
    """The article's generator, verbatim apart from names (our baseline)."""
    punct_list = ["。", "！", "？"]
    text2tts = ""
    for text in deltas:
        text2tts += text
        for punct in punct_list:
            if punct in text:
                front, back = text2tts.replace("\n", "").rsplit(punct, 1)
                yield front + punct
                text2tts = back
                break
    if text2tts:
        yield text2tts


def first_article(toks: list[str]) -> tuple[int, int, str]:
    """(tokens, characters) received when the article's method yields its first piece."""
    seen: list[str] = []

    def counted() -> Iterator[str]:
        for tok in toks:
            seen.append(tok)
            yield tok

    first = next(article_stream(counted()), "")
    return len(seen), sum(map(len, seen)), first


def first_ours(toks: list[str], settings: ChunkingSettings) -> tuple[int, int, str]:
    """(tokens, characters) received when our pipeline has its first utterance."""
    speakable = Speakable(settings)
    chars = 0
    for n, tok in enumerate(toks, 1):
        chars += len(tok)
        got = speakable.feed(tok)
        if got:
            return n, chars, got[0].text
    got = speakable.flush()
    return len(toks), chars, got[0].text if got else ""


def short(text: str, width: int = 24) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def first_piece_table(tps: float) -> list[dict[str, Any]]:
    """Table (a), printed; its rows (``ratio``: how many times earlier we can speak)."""
    print(f"(a) First speakable piece, streamed at {tps:g} tokens/s")
    head = (
        f"{'reply':<18} {'tokens':>6} | {'article chars':>13} {'s':>6} | "
        f"{'clause chars':>12} {'s':>6} | {'sentence chars':>14} {'s':>6} | "
        f"{'ratio':>5}  first piece"
    )
    print(head)
    print("-" * len(head))
    seed_ratio = 0.0
    rows: list[dict[str, Any]] = []
    for name, path in REPLIES.items():
        text = path.read_text(encoding="utf-8")
        toks = tokens(text)
        a_tok, a_chars, _ = first_article(toks)
        c_tok, c_chars, c_first = first_ours(toks, ChunkingSettings(mode="clause"))
        s_tok, s_chars, _ = first_ours(toks, ChunkingSettings(mode="sentence"))
        ratio = a_chars / c_chars
        if path.name == "seed_sky_zh.txt":
            seed_ratio = ratio
        end = "*" if a_tok == len(toks) else " "
        print(
            f"{name:<18} {len(toks):>6} | {a_chars:>12}{end} {a_tok / tps:>6.2f} | "
            f"{c_chars:>12} {c_tok / tps:>6.2f} | {s_chars:>14} {s_tok / tps:>6.2f} | "
            f"{ratio:>4.1f}x  {short(c_first)}"
        )
        rows.append(
            {
                "reply": name,
                "tokens": len(toks),
                "article_chars": a_chars,
                "article_s": a_tok / tps,
                "article_only_at_end": a_tok == len(toks),
                "clause_chars": c_chars,
                "clause_s": c_tok / tps,
                "sentence_chars": s_chars,
                "sentence_s": s_tok / tps,
                "ratio": ratio,
                "first_piece": c_first,
            }
        )
    print("  * the article's method yields nothing before the end of the reply (no 。！？)")
    print("  where both cut at the same mark we are one token later: we wait for the character")
    print("  after 。！？ (a closing quote or another mark stays with the sentence)")
    print("  ratio = article chars / clause-mode chars (how many times earlier we can speak)")
    verdict = "meets" if seed_ratio >= 2 else "MISSES"
    print(f"  seed reply: first piece {seed_ratio:.1f}x earlier ({verdict} the 2x bar)\n")
    return rows


def best_time(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def run_chunker(toks: list[str]) -> None:
    chunker = Chunker()
    for tok in toks:
        chunker.feed(tok)
    chunker.flush()


def run_speakable(toks: list[str]) -> None:
    speakable = Speakable()
    for tok in toks:
        speakable.feed(tok)
    speakable.flush()


def run_article(toks: list[str]) -> None:
    for _ in article_stream(toks):
        pass


def throughput_table(repeat: int) -> list[dict[str, Any]]:
    """Table (b), printed; its rows."""
    seed = REPLIES["zh seed (article)"].read_text(encoding="utf-8")
    english = REPLIES["English"].read_text(encoding="utf-8")
    markdown = REPLIES["Markdown-heavy"].read_text(encoding="utf-8")
    inputs = {
        "zh seed, repeated": seed,
        "English, repeated": english,
        "Markdown, repeated": markdown,
        "no punctuation, words": "lorem ipsum dolor sit amet ",
        "no punctuation, Chinese": "天空之所以呈现蓝色主要是因为散射",
    }
    runners = {"chunker": run_chunker, "+cleanup": run_speakable, "article": run_article}
    print(f"(b) Throughput, fed one simulated token at a time (best of {repeat})")
    head = f"{'input':<24} {'method':<9} {'t(100k) s':>9} {'t(1M) s':>8} {'ratio':>6} {'MB/s':>6}"
    print(head)
    print("-" * len(head))
    rows: list[dict[str, Any]] = []
    for name, unit in inputs.items():
        small = (unit * (100_000 // len(unit) + 1))[:100_000]
        big = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
        toks_small, toks_big = tokens(small), tokens(big)
        mb = len(big.encode("utf-8")) / 1e6
        for method, run in runners.items():
            if method == "+cleanup" and name.startswith("no punct"):
                continue
            t_small = best_time(lambda run=run, toks=toks_small: run(toks), repeat)
            t_big = best_time(lambda run=run, toks=toks_big: run(toks), repeat)
            print(
                f"{name:<24} {method:<9} {t_small:>9.3f} {t_big:>8.3f} "
                f"{t_big / t_small:>6.1f} {mb / t_big:>6.2f}"
            )
            rows.append(
                {
                    "input": name,
                    "method": method,
                    "t_100k_s": t_small,
                    "t_1m_s": t_big,
                    "ratio": t_big / t_small,
                    "mb_per_s": mb / t_big,
                }
            )
    print("  ratio = t(1M)/t(100k): about 10 is linear; MB/s counts UTF-8 bytes of the 1M input")
    print("  (the article's method is linear too, but it never cuts text without 。！？)")
    return rows


LEGEND = {
    "zh seed: ours s": "the article's reply (Chinese): simulated seconds to our first piece",
    "zh seed: article s": "the same reply: seconds to the article's method's first piece",
    "zh seed: x earlier": "article's characters / ours at the first piece (bar: 2x)",
    "English: ours s": "an English reply: seconds to our first piece",
    "English: article s": "the same reply, article's method (end of reply: it has no 。！？)",
    "1M zh +cleanup s": "1 M characters of the Chinese reply through chunker and cleanup",
    "worst t(1M)/t(100k)": "the largest ratio of our rows in (b): about 10 is linear",
}


def summary(first: list[dict[str, Any]], speed: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures of the table in docs/benchmarks/chunker.md."""
    by_reply = {row["reply"]: row for row in first}
    seed, english = by_reply["zh seed (article)"], by_reply["English"]
    ours = [row for row in speed if row["method"] != "article"]
    big = [r["t_1m_s"] for r in ours if r["input"].startswith("zh") and r["method"] == "+cleanup"]
    return {
        "zh seed: ours s": seed["clause_s"],
        "zh seed: article s": seed["article_s"],
        "zh seed: x earlier": seed["ratio"],
        "English: ours s": english["clause_s"],
        "English: article s": english["article_s"],
        "1M zh +cleanup s": big[0] if big else None,
        "worst t(1M)/t(100k)": max((r["ratio"] for r in ours), default=None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens-per-s", type=float, default=8.0, help="simulated LLM speed")
    parser.add_argument("--repeat", type=int, default=2, help="throughput runs (best is shown)")
    parser.add_argument("--skip-throughput", action="store_true", help="only table (a)")
    benchlib.add_arguments(parser)
    args = parser.parse_args()
    started = benchlib.start()
    first = first_piece_table(args.tokens_per_s)
    speed = [] if args.skip_throughput else throughput_table(max(1, args.repeat))
    seed_ratio = next(row["ratio"] for row in first if row["reply"] == "zh seed (article)")
    benchlib.finish(
        "chunker",
        args,
        doc=__doc__,
        started=started,
        summary=summary(first, speed),
        legend=LEGEND,
        results={
            "first_piece": {
                "tokens_per_s": args.tokens_per_s,
                "rows": first,
                "seed_ratio": seed_ratio,
                "seed_meets_2x": seed_ratio >= 2,
            },
            "throughput": {"repeat": max(1, args.repeat), "rows": speed} if speed else None,
        },
    )


if __name__ == "__main__":
    main()
