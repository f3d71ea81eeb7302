#!/usr/bin/env bash
# Set up voicechat on a Jetson (JetPack 6, Ubuntu 22.04, aarch64): system packages, Ollama as a
# systemd service, the model pulled, voicechat in its own venv (with Piper), a Chinese and an
# English neural voice pulled from Hugging Face, and a `voicechat doctor` run; with --service,
# voicechat hands-free as a systemd user service that starts at boot.
# Idempotent: every step checks first and skips what is already done, so running it again is
# safe (and quick). Run it as your normal user; it uses sudo for apt and systemd.
set -euo pipefail

MODEL=${VOICECHAT_MODEL:-qwen2.5:7b}
VENV=${VOICECHAT_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/voicechat/venv}
BIN_DIR=${VOICECHAT_BIN_DIR:-$HOME/.local/bin}
OLLAMA_URL=${OLLAMA_URL:-http://127.0.0.1:11434}
OLLAMA_INSTALL=https://ollama.com/install.sh
SOURCE=""          # where voicechat is installed from: a checkout, or PyPI
PROFILE=""         # the profile the service runs and the doctor checks (--profile)
DRY_RUN=0
SERVICE=0          # --service: install the user service too
ONLY=""            # --service-only / --remove-service: that, and nothing else
PULL=1
VOICES_PULL=1
DOCTOR=1
# Piper voices the Jetson profiles name (tts.voice_zh / tts.voice); until they are pulled,
# those profiles fall back to espeak (tts.fallback)
VOICES=(zh_CN-huayan-medium en_US-lessac-medium)
VOICES_DIR=${XDG_DATA_HOME:-$HOME/.local/share}/voicechat/voices
# where systemd looks for a user's own units; voicechat/service.py writes the unit's text
UNIT=voicechat.service
UNIT_DIR=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
APT_PACKAGES=(
    espeak-ng libespeak-ng1       # the default voice (pyttsx3 drives libespeak-ng)
    libportaudio2                 # audio output (sounddevice)
    alsa-utils                    # aplay -l: find the speaker
    python3-venv python3-pip      # voicechat's own virtual environment
    curl ca-certificates          # the Ollama installer
)

usage() {
    cat <<EOF
Usage: scripts/setup_jetson.sh [options]

Set up voicechat on a Jetson running JetPack 6. Safe to run again.

Steps:
  1. system packages: ${APT_PACKAGES[*]}
  2. Ollama (official installer: $OLLAMA_INSTALL), running as the systemd service 'ollama'
  3. ollama pull MODEL
  4. voicechat with Piper (voicechat[piper]) in a venv ($VENV), linked into $BIN_DIR
  5. Piper voices from Hugging Face: ${VOICES[*]}
  6. with --service: voicechat chat --listen as the systemd user service $UNIT,
     started now and at every boot (loginctl enable-linger), restarted when it fails
  7. voicechat doctor

Options:
  --dry-run         print the steps and commands; change nothing
  --model NAME      model to pull and use [qwen2.5:7b]; qwen2.5:3b / qwen2.5:1.5b have
                    shipped profiles for when the 7B model does not fit
  --venv DIR        where voicechat's venv goes [$VENV]
  --from PATH|pypi  install voicechat from this checkout or from PyPI
                    [the checkout this script is in, if it is one; else pypi]
  --no-pull         skip the model download
  --no-voices       skip the Piper voices (the profiles then speak with espeak)
  --no-doctor       skip the final voicechat doctor run
  --profile NAME    the profile the service runs and the doctor checks
                    [ollama-MODEL when voicechat ships it, else voicechat's default]
  --service         also install and start the user service (step 6): hands-free, meant
                    for a profile with a wake phrase; logs: journalctl --user -u voicechat -f
  --service-only    only step 6 (voicechat must be installed in the venv already)
  --remove-service  stop, disable and delete the user service; nothing else
  -h, --help        this text

Environment: VOICECHAT_MODEL, VOICECHAT_VENV, VOICECHAT_BIN_DIR, OLLAMA_URL.
EOF
}

while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --model) MODEL=${2:?--model needs a name}; shift ;;
        --model=*) MODEL=${1#*=} ;;
        --venv) VENV=${2:?--venv needs a folder}; shift ;;
        --venv=*) VENV=${1#*=} ;;
        --from) SOURCE=${2:?--from needs a path or pypi}; shift ;;
        --from=*) SOURCE=${1#*=} ;;
        --no-pull) PULL=0 ;;
        --no-voices) VOICES_PULL=0 ;;
        --no-doctor) DOCTOR=0 ;;
        --profile) PROFILE=${2:?--profile needs a name}; shift ;;
        --profile=*) PROFILE=${1#*=} ;;
        --service) SERVICE=1 ;;
        --service-only) ONLY=service ;;
        --remove-service) ONLY=remove ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup_jetson: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z $SOURCE ]]; then
    if grep -qs '^name = "voicechat"' "$HERE/pyproject.toml"; then SOURCE=$HERE; else SOURCE=pypi; fi
fi
if [[ $ONLY == remove ]] && ((SERVICE)); then
    echo "setup_jetson: --service and --remove-service contradict each other" >&2
    exit 2
fi
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO=sudo
if [[ -z $SUDO ]] && { [[ -n $ONLY ]] || ((SERVICE)); }; then
    echo "setup_jetson: a user service belongs to a user: run this as that user, not as root" >&2
    exit 2
fi
USER_NAME=${USER:-$(id -un)}
STEP=0
STEPS=$((6 + SERVICE))
[[ -n $ONLY ]] && STEPS=1

step() { STEP=$((STEP + 1)); printf '\n== %d/%d %s\n' "$STEP" "$STEPS" "$*"; }
note() { printf '   %s\n' "$*"; }
die() { echo "setup_jetson: $*" >&2; exit 1; }
# Print a command, then run it (unless --dry-run). Commands are given as separate words.
run() {
    printf '   + %s\n' "$*"
    ((DRY_RUN)) || "$@"
}
# Same, for a pipeline given as one string.
run_sh() {
    printf '   + %s\n' "$1"
    ((DRY_RUN)) || bash -o pipefail -c "$1"
}

# The profile the service runs and the doctor checks: --profile, else the model's shipped
# profile (qwen2.5:7b -> ollama-qwen2.5-7b), else none (voicechat's default).
use_profile() {
    local name="ollama-${MODEL/:/-}"
    local shipped=("$HERE/configs/$name.yaml" "$VENV"/lib/python3*/site-packages/voicechat/configs/"$name.yaml")
    if [[ -n $PROFILE ]]; then
        echo "$PROFILE"
    elif [[ -f ${shipped[0]} || -f ${shipped[1]:-} ]]; then
        echo "$name"
    fi
}

# systemctl --user needs the user's own systemd, reached through a login (desktop or ssh);
# sudo, su and cron have none
user_manager() {
    systemctl --user show-environment >/dev/null 2>&1 && return 0
    local why="no systemd user session here (systemctl --user cannot reach it): run this in"
    why+=" a login as $USER_NAME (desktop or ssh), not through sudo, su or cron"
    ((DRY_RUN)) || die "$why"
    note "warning: $why"
}

# The unit comes from the venv's voicechat (voicechat/service.py), so it runs that voicechat
# with that version's settings; it is rewritten only when it changes.
service_step() {
    local file=$UNIT_DIR/$UNIT profile unit changed=1 active=0 enabled=0
    step "voicechat as a user service ($file)"
    user_manager
    profile=$(use_profile)
    local render=("$VENV/bin/python" -m voicechat.service --voicechat "$VENV/bin/voicechat")
    [[ -n $profile ]] && render+=(--profile "$profile")
    note "runs: voicechat chat --listen${profile:+ --profile $profile}"
    note "hands-free, it answers whatever it hears: give the profile a wake phrase (stt.wake)"
    if unit=$("${render[@]}" 2>/dev/null) && [[ -f $file && $(<"$file") == "$unit" ]]; then
        changed=0
        note "$file is up to date"
    else
        [[ -d $UNIT_DIR ]] || run mkdir -p "$UNIT_DIR"
        printf '   + %s > %s\n' "${render[*]}" "$file"
        if ((!DRY_RUN)); then
            "${render[@]}" >"$file.new" \
                || { rm -f "$file.new"; die "$VENV/bin/python could not write the unit (see above)"; }
            mv "$file.new" "$file"
        fi
    fi
    if systemctl --user is-active --quiet "$UNIT" 2>/dev/null; then active=1; fi
    if systemctl --user is-enabled --quiet "$UNIT" 2>/dev/null; then enabled=1; fi
    if ((changed)); then run systemctl --user daemon-reload; fi
    if ((!enabled || !active)); then run systemctl --user enable --now "$UNIT"; fi
    if ((changed && active)); then run systemctl --user restart "$UNIT"; fi  # the old unit runs
    if ((enabled && active && !changed)); then note "$UNIT is enabled and running"; fi
    # lingering: the user's systemd (and so the service) starts at boot, without a login;
    # loginctl lets a user in a local session do it, others need sudo
    if [[ $(loginctl show-user "$USER_NAME" --property=Linger --value 2>/dev/null) == yes ]]; then
        note "lingering is on for $USER_NAME: it starts at boot, without a login"
    else
        local who linger
        who=$(printf '%q' "$USER_NAME")
        linger="loginctl --no-ask-password enable-linger $who 2>/dev/null"
        run_sh "$linger || sudo loginctl enable-linger $who"
    fi
    # with nobody logged in, no session grants the sound devices to the user: the group does
    if ! id -nG 2>/dev/null | tr ' ' '\n' | grep -qx audio; then
        note "to hear and speak at boot before anyone logs in, $USER_NAME needs the audio group:"
        note "sudo usermod -aG audio $USER_NAME (takes effect at the next login or boot)"
    fi
    note "logs: journalctl --user -u voicechat -f; stop: systemctl --user stop voicechat"
}

remove_service() {
    local file=$UNIT_DIR/$UNIT
    step "remove the voicechat user service ($file)"
    if [[ ! -f $file ]]; then
        note "not installed"
        return 0
    fi
    user_manager
    run systemctl --user disable --now "$UNIT"
    run rm -f "$file"
    run systemctl --user daemon-reload
    note "lingering stays on (other user services may need it): loginctl disable-linger $USER_NAME"
}

((DRY_RUN)) && printf 'Dry run: nothing will be changed.\n'
if [[ ! -e /etc/nv_tegra_release ]]; then
    note "warning: /etc/nv_tegra_release not found: this does not look like a Jetson"
fi
if [[ $(uname -m) != aarch64 ]]; then
    note "warning: $(uname -m) is not aarch64: this script is meant for JetPack 6 on a Jetson"
fi

if [[ -n $ONLY ]]; then
    if [[ $ONLY == remove ]]; then
        remove_service
    else
        [[ -x $VENV/bin/voicechat ]] \
            || die "voicechat is not installed in $VENV: run scripts/setup_jetson.sh --service"
        service_step
    fi
    ((DRY_RUN)) && printf '\nDry run: nothing was changed.\n'
    exit 0
fi

# --- 1. system packages ---------------------------------------------------------------------

step "system packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if ((${#missing[@]})); then
    run $SUDO apt-get update
    run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${missing[@]}"
else
    note "already installed: ${APT_PACKAGES[*]}"
fi

# --- 2. Ollama ------------------------------------------------------------------------------

step "Ollama as a service"
if command -v ollama >/dev/null 2>&1; then
    note "ollama is installed: $(ollama --version 2>/dev/null | tail -n 1)"
else
    # the official installer knows JetPack: it fetches the CUDA build for the Jetson's GPU
    # and registers the systemd service
    run_sh "curl -fsSL $OLLAMA_INSTALL | sh"
fi
if systemctl is-active --quiet ollama 2>/dev/null; then
    note "the ollama service is running"
else
    run $SUDO systemctl enable --now ollama
fi
if ((!DRY_RUN)); then
    for _ in $(seq 60); do
        curl -fsS "$OLLAMA_URL/" >/dev/null 2>&1 && break
        sleep 0.5
    done
    curl -fsS "$OLLAMA_URL/" >/dev/null \
        || { echo "setup_jetson: Ollama does not answer at $OLLAMA_URL: journalctl -u ollama" >&2; exit 1; }
fi

# --- 3. the model -----------------------------------------------------------------------------

step "model $MODEL"
if ((!PULL)); then
    note "skipped (--no-pull)"
elif command -v ollama >/dev/null 2>&1 && ollama list 2>/dev/null | awk 'NR > 1 {print $1}' \
    | grep -qx -e "$MODEL" -e "$MODEL:latest"; then
    note "$MODEL is pulled"
else
    run ollama pull "$MODEL"
fi

# --- 4. voicechat -----------------------------------------------------------------------------

step "voicechat in $VENV"
if [[ -x $VENV/bin/python ]]; then
    note "venv exists"
else
    run python3 -m venv "$VENV"
fi
if [[ $SOURCE == pypi ]]; then
    run "$VENV/bin/python" -m pip install --upgrade "voicechat[piper]"
else
    run "$VENV/bin/python" -m pip install --upgrade "${SOURCE}[piper]"
fi
if [[ -L $BIN_DIR/voicechat && $(readlink "$BIN_DIR/voicechat") == "$VENV/bin/voicechat" ]]; then
    note "$BIN_DIR/voicechat links to the venv"
else
    run mkdir -p "$BIN_DIR"
    run ln -sfn "$VENV/bin/voicechat" "$BIN_DIR/voicechat"
fi
case ":$PATH:" in
    *":$BIN_DIR:"*) ;;
    *) note "add $BIN_DIR to PATH (e.g. in ~/.bashrc): export PATH=\"$BIN_DIR:\$PATH\"" ;;
esac

# --- 5. Piper voices ---------------------------------------------------------------------------

step "Piper voices"
wanted=()
for voice in "${VOICES[@]}"; do
    if [[ -f $VOICES_DIR/$voice/$voice.onnx && -f $VOICES_DIR/$voice/$voice.onnx.json ]]; then
        note "$voice is pulled"
    else
        wanted+=("$voice")
    fi
done
if ((!VOICES_PULL)); then
    note "skipped (--no-voices): the profiles speak with espeak until: voicechat voices pull ${VOICES[*]}"
elif ((${#wanted[@]})); then
    # verified against the repository's checksums; run again to resume after a failure
    run "$VENV/bin/voicechat" voices pull "${wanted[@]}"
fi

# --- 6. the service (--service) ----------------------------------------------------------------

((SERVICE)) && service_step

# --- 7. doctor --------------------------------------------------------------------------------

step "voicechat doctor"
profile=$(use_profile)
doctor=("$VENV/bin/voicechat" doctor)
if [[ -n $profile ]]; then
    doctor=(env "VOICECHAT_PROFILE=$profile" "${doctor[@]}")
    note "profile: $profile (make it your default: export VOICECHAT_PROFILE=$profile)"
else
    note "no shipped profile for $MODEL: the default profile is checked; for $MODEL copy one"
    note "into \$HOME/.config/voicechat/profiles/ and set backend.model: $MODEL"
fi
status=0
if ((DOCTOR)); then
    run "${doctor[@]}" || status=$?
else
    note "skipped (--no-doctor)"
fi

printf '\nFor the most tokens/s: sudo nvpmodel -m 0 && sudo jetson_clocks (see the README).\n'
((DRY_RUN)) && printf 'Dry run: nothing was changed.\n'
exit "$status"
