# Shared set-up for scripts/dev/*: Debian packages and the project's virtualenv.
# Sourced, not run. Everything here is idempotent, so a second run costs seconds.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PROVISIOND_VENV:-$REPO/.venv}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# install_debian_packages PKG... : apt-get install what is missing. slapd is preseeded to
# install without creating a database, and no packaged service is started meanwhile.
install_debian_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "slapd slapd/no_configuration boolean true" | as_root debconf-set-selections
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    [ -n "$created_policy" ] && as_root rm -f "$policy"
    return 0
}

# make_venv EXTRAS : a virtualenv with provisiond installed in editable mode.
make_venv() {
    local extras="${1:-}"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    if [ -n "$extras" ]; then
        "$VENV/bin/python" -m pip install -q -e "$REPO[$extras]"
    else
        "$VENV/bin/python" -m pip install -q -e "$REPO"
    fi
}
