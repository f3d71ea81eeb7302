"""The article's method, as published: cut the Ollama stream at 。！？ and speak each sentence
with pyttsx3 ``say()`` + ``runAndWait()`` (which plays through ``aplay``).

Run by scripts/bench_latency.py as a subprocess: ``python scripts/article_baseline.py URL MODEL
QUESTION``. The stream code is the article's Ollama ``stream()`` (requests, iter_lines,
punct_list), kept as close to the original as possible; only the URL is a parameter, the
Chinese voice is chosen for a Chinese question, and each utterance is awaited (see below).
"""

from __future__ import annotations

import json
import sys
import threading

import pyttsx3
import requests

punct_list = ["。", "！", "？"]


def stream(base_url: str, model: str, messages: list[dict[str, str]]):
    data = {"model": model, "messages": messages, "stream": True}
    response = requests.post(base_url, json=data, stream=True)
    text2tts = ""
    for line in response.iter_lines():
        data = json.loads(line.decode("utf-8"))
        text = data["message"]["content"]
        text2tts += text
        for punct in punct_list:
            if punct in text:
                front, back = text2tts.replace("\n", "").rsplit(punct, 1)
                yield front + punct
                text2tts = back
                break
    if text2tts:
        yield text2tts


def main() -> None:
    url, model, question = sys.argv[1:4]
    engine = pyttsx3.init()
    # pyttsx3 2.99: runAndWait() can return before espeak's thread has played the text
    # (pyttsx3 #126/#402); wait for the end of each utterance so the method's audio is heard
    # (the article was written against a pyttsx3 where runAndWait blocked).
    finished = threading.Event()
    engine.connect("finished-utterance", lambda **_: finished.set())
    if any("\u4e00" <= ch <= "\u9fff" for ch in question):
        engine.setProperty("voice", "cmn-latn-pinyin")
    for text in stream(url, model, [{"role": "user", "content": question}]):
        print(text, flush=True)
        finished.clear()
        engine.say(text)
        engine.runAndWait()
        finished.wait(120)


if __name__ == "__main__":
    main()
