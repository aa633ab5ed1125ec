#!/usr/bin/env bash
# `just images`: the phoenix-operator and phoenix-simulator OCI images, built without a container
# daemon. Static release binaries (x86_64-unknown-linux-musl, or x86_64-unknown-linux-gnu with
# +crt-static when the musl target or musl-gcc cannot be installed; scripts/static-bins.sh) on
# `scratch` (Containerfile), built by Debian's buildah with vfs storage and chroot isolation in a
# private store under target/images/, written as OCI archives:
#
#   target/images/phoenix-operator.tar    ref ghcr.io/phoenix-operator/phoenix-operator:<version>
#   target/images/phoenix-simulator.tar   ref ghcr.io/phoenix-operator/phoenix-simulator:<version>
#
# <version> is the phoenix package's version (Cargo.toml, also the chart's appVersion); the images
# are labelled and annotated with it and the git revision. No registry is contacted: `scratch` only.
# Load one with `skopeo copy oci-archive:target/images/phoenix-operator.tar docker-daemon:…`,
# `docker load -i …` (Docker 25+) or `crane push target/images/phoenix-operator.tar <ref>`.
#
# Env: PHOENIX_IMAGE_REGISTRY (default ghcr.io/phoenix-operator), PHOENIX_IMAGE_TARGET (force a Rust
# target triple).
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${PHOENIX_IMAGE_REGISTRY:-ghcr.io/phoenix-operator}
SOURCE_URL=https://github.com/phoenix-operator/phoenix
IMAGES=(phoenix-operator phoenix-simulator)
OUT=target/images
STORE=(--storage-driver vfs --root "$PWD/$OUT/storage" --runroot "$PWD/$OUT/run")

log() { printf 'images: %s\n' "$*" >&2; }
# shellcheck source=scripts/need.sh
source scripts/need.sh

need buildah buildah
need strip binutils

BIN_DIR=$(scripts/static-bins.sh "${IMAGES[@]}")

VERSION=$(cargo pkgid -p phoenix | sed 's/.*[#@]//')
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "could not read the phoenix version (got '$VERSION')"
REVISION=$(git rev-parse HEAD)
[[ -z $(git status --porcelain --untracked-files=no) ]] || REVISION=$REVISION-dirty
EPOCH=$(git log -1 --format=%ct)
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# The build context: binaries, CA bundle and the small root filesystem, nothing else.
CONTEXT=$OUT/context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/rootfs/etc" "$CONTEXT/rootfs/tmp"
chmod 1777 "$CONTEXT/rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$CONTEXT/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$CONTEXT/rootfs/etc/group"
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || need update-ca-certificates ca-certificates
cp /etc/ssl/certs/ca-certificates.crt "$CONTEXT/"
for name in "${IMAGES[@]}"; do
  bin=$BIN_DIR/$name
  # Symbols off (the release profile keeps them); panics still name their source location.
  strip --strip-all -o "$CONTEXT/$name" "$bin"
done

for name in "${IMAGES[@]}"; do
  ref=$REGISTRY/$name:$VERSION
  archive=$OUT/$name.tar
  meta=()
  for kv in \
    "org.opencontainers.image.title=$name" \
    "org.opencontainers.image.description=Phoenix: $name" \
    "org.opencontainers.image.version=$VERSION" \
    "org.opencontainers.image.revision=$REVISION" \
    "org.opencontainers.image.source=$SOURCE_URL" \
    "org.opencontainers.image.url=$SOURCE_URL" \
    "org.opencontainers.image.licenses=Apache-2.0" \
    "org.opencontainers.image.created=$CREATED"; do
    meta+=(--label "$kv" --annotation "$kv")
  done
  log "buildah build $ref"
  buildah "${STORE[@]}" build --quiet --isolation chroot --format oci --identity-label=false \
    --timestamp "$EPOCH" --target "$name" -f Containerfile -t "$ref" "${meta[@]}" "$CONTEXT" >/dev/null
  rm -f "$archive"
  buildah "${STORE[@]}" push --quiet "$ref" "oci-archive:$archive:$ref"
  buildah "${STORE[@]}" rmi "$ref" >/dev/null
  log "$archive: $ref, $(du -k "$archive" | cut -f1) KiB (binary $(du -k "$CONTEXT/$name" | cut -f1) KiB)"
  if command -v skopeo >/dev/null 2>&1; then
    skopeo inspect --format '  skopeo inspect: digest {{.Digest}} {{.Os}}/{{.Architecture}} layers {{len .Layers}}' \
      "oci-archive:$archive" >&2
  fi
done
buildah "${STORE[@]}" rmi --all >/dev/null 2>&1 || true
rm -rf "$CONTEXT"
