# Shared by scripts/*.sh and .ci/run: make sure the Debian packages Rampart's tests and lab need
# are installed (one `apt-get update` at most), and that a Rust toolchain is there. Sourced, not run.
# Each check stops with one line naming what is missing.

rampart_need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "rampart: run this as root (the tests build network namespaces and load nftables rulesets)" >&2
        exit 2
    fi
}

rampart_need_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "rampart: cargo is missing: install Rust >= 1.85 (e.g. rustup) and re-run" >&2
        exit 2
    fi
}

# Debian package for each command the tests and the lab run.
RAMPART_PACKAGES="nft:nftables ip:iproute2 iptables-nft:iptables ping:iputils-ping nc:netcat-openbsd socat:socat python3:python3 tcpdump:tcpdump dig:dnsutils nsenter:util-linux setpriv:util-linux sha256sum:coreutils timeout:coreutils dnsmasq:dnsmasq-base"
# (The lab runs dnsmasq as the corp bridge's legitimate DHCP server, hence dnsmasq above.)
# Only the test suite needs these: the daemon's dashboard test drives headless Chromium, the
# SYN-proxy test floods with hping3,
# the DNS filter's DoT test forwards to Unbound serving DoT, the egress tests use curl, and the
# apply test turns an interface's receive offloads off with ethtool.
RAMPART_TEST_PACKAGES="chromium:chromium hping3:hping3 unbound:unbound curl:curl ethtool:ethtool"

rampart_install_packages() {
    local missing="" pair cmd pkg
    for pair in $RAMPART_PACKAGES ${RAMPART_EXTRA_PACKAGES:-}; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "rampart: missing packages:$missing (no apt-get here: install them and re-run)" >&2
        exit 2
    fi
    echo "rampart: installing$missing" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } >/tmp/rampart-apt.log 2>&1; then
        echo "rampart: apt-get could not install$missing (see /tmp/rampart-apt.log)" >&2
        exit 2
    fi
}
