"""llama.cpp's own HTTP server (what ``llama-server`` runs) through the ``xllamacpp`` wheel.

The realserver tier and ``scripts/e2e_real_server.sh --serve`` start it as a process::

    python tests/e2e/llama_server.py --model M.gguf --alias NAME --port 8080

It needs only ``xllamacpp`` (a prebuilt wheel, no compiler), not voicechat: the script runs it
in a venv of its own. It prints one ``listening on URL`` line once the model is loaded and the
port answers, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--alias", help="the name /v1/models lists (default: the file's path)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx", type=int, default=2048, help="context size in tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--chat-template",
        default="",
        help="a llama.cpp built-in template name (gemma, chatml, ...) for GGUFs without one",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.alias:
        params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = 1  # one slot: a second request waits, as with llama-cpp-python
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    if args.chat_template:
        # a built-in name is honoured only outside Jinja mode; in Jinja mode the name itself
        # would be the template (the prompt became the 3 tokens of "gemma")
        params.use_jinja = False
        params.chat_template = args.chat_template

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = xllamacpp.Server(params)  # returns once the model is loaded and listening
    except RuntimeError as exc:
        print(f"llama_server: {exc} (model {args.model}, port {args.port})", file=sys.stderr)
        return 1
    print(f"listening on {server.listening_address}", flush=True)
    stop.wait()
    del server  # stops the HTTP threads and the generation loop
    return 0


if __name__ == "__main__":
    sys.exit(main())
