#!/usr/bin/env bash
# Builds the Debian package once and checks it (tests/run calls it under CI=true; run it by hand
# with `bash tests/package.sh`):
#   1. release binary → `sipward generate-assets` (man pages, completions) → `cargo deb --no-build`
#   2. lintian: no errors (warnings and info are printed)
#   3. systemd-analyze security --offline on the unit: exposure score printed, at most 2.5
#   4. installs it (dpkg -i as root, else dpkg-deb -x into a temporary root) and runs
#      `sipward --version` and `sipward check-config /etc/sipward/sipward.toml`; checks the
#      system user, the conffile and the shipped files; systemd-analyze verify on the unit
#   5. removes it again (dpkg --purge) when it installed it
# Needs: cargo-deb (installed with `cargo install cargo-deb --locked` when missing), lintian,
# systemd (systemd-analyze), adduser, man-db, dpkg.
set -euo pipefail
cd "$(dirname "$0")/.."

max_exposure=2.5
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

need=()
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
command -v man >/dev/null 2>&1 || need+=(man-db)
if ((${#need[@]})); then
  echo "package.sh: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb"
  cargo install cargo-deb --locked
fi

target="${CARGO_TARGET_DIR:-target}"
# 1. Build once (the release profile is fat LTO: slow), then package what was built.
cargo build --release --locked --bin sipward
rm -rf "$target/release/assets"
"$target/release/sipward" generate-assets --out "$target/release/assets"
# Debian policy: man pages and the upstream changelog compressed.
gzip -9n "$target"/release/assets/man/*.1
gzip -9n <CHANGELOG.md >"$target/release/assets/changelog.gz"
rm -rf "$target/debian"
cargo deb --no-build --locked --strip --output "$target/debian/"
deb=$(ls "$target"/debian/sipward_*.deb)
echo "package.sh: built $deb"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/sipward ./etc/sipward/sipward.toml ./usr/share/man/man1/sipward.1.gz \
  ./usr/share/man/man1/sipward-check-config.1.gz ./usr/share/bash-completion/completions/sipward \
  ./usr/share/zsh/vendor-completions/_sipward ./usr/share/fish/vendor_completions.d/sipward.fish \
  ./usr/lib/systemd/system/sipward.service ./usr/share/doc/sipward/copyright \
  ./usr/share/doc/sipward/production.md; do
  grep -q " $f\$" <<<"$contents" || { echo "package.sh: $f missing from the package" >&2; exit 1; }
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/sipward/sipward.toml ||
  { echo "package.sh: /etc/sipward/sipward.toml is not a conffile" >&2; exit 1; }

# 2. lintian: errors fail; everything else is shown.
echo "package.sh: lintian"
lintian --info --display-info --fail-on error "$deb" | tee "$target/debian/lintian.txt"
echo "package.sh: lintian: $(grep -c '^E:' "$target/debian/lintian.txt" || true) errors," \
  "$(grep -c '^W:' "$target/debian/lintian.txt" || true) warnings"

# 3. The exposure score of the unit file as shipped.
unit=contrib/debian/sipward.service
security=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1)
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$security")
echo "package.sh: systemd-analyze security: exposure $score (at most $max_exposure)"
[ -n "$score" ] || { echo "$security" >&2; exit 1; }
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }' ||
  { echo "$security" >&2; echo "package.sh: exposure $score above $max_exposure" >&2; exit 1; }

# 4. Install (or extract) and run what was installed.
installed=""
if [ -z "$sudo" ]; then
  if dpkg -s sipward >/dev/null 2>&1; then
    echo "package.sh: sipward is already installed here; not touching it" >&2
    exit 1
  fi
  dpkg -i "$deb"
  installed=1
  trap 'dpkg --purge sipward >/dev/null' EXIT
  root=""
  getent passwd sipward >/dev/null || { echo "package.sh: no sipward user" >&2; exit 1; }
  [ -d /var/lib/sipward ] || { echo "package.sh: no /var/lib/sipward" >&2; exit 1; }
  [ "$(stat -c %U:%a /var/lib/sipward)" = "sipward:700" ] ||
    { echo "package.sh: /var/lib/sipward is $(stat -c %U:%a /var/lib/sipward)" >&2; exit 1; }
  echo "package.sh: systemd-analyze verify"
  # A unit that fails verification prints why and exits non-zero.
  systemd-analyze verify /usr/lib/systemd/system/sipward.service
else
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  dpkg-deb -x "$deb" "$root"
fi
version=$("$root/usr/bin/sipward" --version)
echo "package.sh: $version"
grep -Eq '^sipward [0-9]+\.[0-9]+\.[0-9]+ \(commit ([0-9a-f]+|unknown)\)$' <<<"$version" ||
  { echo "package.sh: unexpected --version: $version" >&2; exit 1; }
"$root/usr/bin/sipward" check-config "$root/etc/sipward/sipward.toml"
if [ -n "$installed" ]; then
  # As the unit runs it: the sipward user reads the config.
  runuser -u sipward -- /usr/bin/sipward check-config /etc/sipward/sipward.toml
  man -w sipward >/dev/null
fi
echo "package.sh: ok"
