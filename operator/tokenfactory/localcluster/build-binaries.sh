#!/usr/bin/env bash
# Build the local control plane's binaries from Go modules, with the machine's Go, into a cache.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  <- k8s.io/kubernetes
#   etcd                                                              <- go.etcd.io/etcd/server/v3
#   kwok (controller)                                                 <- sigs.k8s.io/kwok
#   helm                                                              <- helm.sh/helm/v3
#   prometheus (server + promtool)                                    <- github.com/prometheus/prometheus
#   crds: Gateway API CRDs (standard channel)                         <- sigs.k8s.io/gateway-api
#         InferencePool CRD (inference.networking.k8s.io)             <- sigs.k8s.io/gateway-api-inference-extension
#
# Versions are pinned below. Binaries land in $TOKENFACTORY_CACHE/bin (default
# ~/.cache/tokenfactory/bin) and are rebuilt only when missing or when the pinned version changes;
# the CRD YAML (copied out of the modules, nothing built) lands in $TOKENFACTORY_CACHE/crds/<module>.
# Usage: build-binaries.sh [component ...]   (components: kubernetes etcd kwok helm prometheus crds;
#        default all)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
# Prometheus v3.x is published as Go module versions v0.3xx.y (v3.16.0 = v0.316.0).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-0.316.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-1.4.1}"
INFERENCE_EXTENSION_VERSION="${INFERENCE_EXTENSION_VERSION:-1.3.0}"

CACHE="${TOKENFACTORY_CACHE:-$HOME/.cache/tokenfactory}"
BIN="$CACHE/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0
JOBS="${TOKENFACTORY_BUILD_JOBS:-$(nproc)}"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One build at a time per cache: a second invocation waits for the first, then finds its outputs
# cached. (Two concurrent `go build`s into the same outputs would race on the final `mv`.)
if command -v flock >/dev/null && [[ -z "${TOKENFACTORY_BUILD_LOCKED:-}" ]]; then
  exec 9>"$CACHE/.build.lock"
  if ! flock -n 9; then
    log "another build-binaries.sh is running on $CACHE; waiting for it to finish"
    flock 9
  fi
  export TOKENFACTORY_BUILD_LOCKED=1
fi

command -v go >/dev/null || { log "Go is required (go 1.24 or newer) and was not found on PATH"; exit 1; }

# up_to_date NAME VERSION: true when $BIN/NAME exists and was built for VERSION.
up_to_date() { [[ -x "$BIN/$1" && "$(cat "$BIN/.$1.version" 2>/dev/null)" == "$2" ]]; }
stamp() { echo "$2" > "$BIN/.$1.version"; }

build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl) todo=() n
  for n in "${names[@]}"; do up_to_date "$n" "$K8S_VERSION" || todo+=("$n"); done
  [[ ${#todo[@]} -eq 0 ]] && { log "kubernetes v$K8S_VERSION: cached"; return; }
  local minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  local staging="0.${K8S_VERSION#*.}"
  local mod="$WORK/kubernetes-$K8S_VERSION"
  mkdir -p "$mod"
  log "kubernetes v$K8S_VERSION: preparing helper module (staging modules pinned to v$staging)"
  # k8s.io/kubernetes' own go.mod replaces every staging module with a local path, which `go install`
  # refuses (golang/go#44840). A helper module requires it and replaces each staging module with the
  # published version of the same release instead. The list comes from that tag's go.mod.
  go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" > "$mod/download.json"
  local gomod
  gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$mod/download.json")
  {
    echo "module tokenfactory.dev/localcluster/kubernetes"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 v'"$staging"'#p' "$gomod"
    echo ")"
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$mod" && go mod download)
  local ver="v$K8S_VERSION"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for n in "${todo[@]}"; do
    log "kubernetes v$K8S_VERSION: building $n (cold builds take several minutes each)"
    local t0=$SECONDS
    (cd "$mod" && go build -p "$JOBS" -trimpath -ldflags "$ldflags" -o "$BIN/$n.tmp" "k8s.io/kubernetes/cmd/$n")
    mv "$BIN/$n.tmp" "$BIN/$n"; stamp "$n" "$K8S_VERSION"
    log "kubernetes v$K8S_VERSION: $n built in $((SECONDS - t0))s"
  done
}

build_etcd() {
  up_to_date etcd "$ETCD_VERSION" && { log "etcd v$ETCD_VERSION: cached"; return; }
  local mod="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  log "etcd v$ETCD_VERSION: building"
  cat > "$mod/go.mod" <<GOMOD
module tokenfactory.dev/localcluster/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
  cat > "$mod/main.go" <<'GO'
// etcd's own main package is a thin wrapper around etcdmain; this is the same wrapper.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  local t0=$SECONDS
  (cd "$mod" && go mod tidy && go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .)
  mv "$BIN/etcd.tmp" "$BIN/etcd"; stamp etcd "$ETCD_VERSION"
  log "etcd v$ETCD_VERSION: built in $((SECONDS - t0))s"
}

build_go_install() {  # NAME VERSION PACKAGE
  local name=$1 version=$2 pkg=$3
  up_to_date "$name" "$version" && { log "$name v$version: cached"; return; }
  log "$name v$version: building"
  local t0=$SECONDS tmp="$WORK/gobin-$name"
  mkdir -p "$tmp"
  GOBIN="$tmp" go install -p "$JOBS" -trimpath -ldflags "-s -w" "$pkg@v$version"
  mv "$tmp/$(basename "${pkg%%/v[0-9]*}")" "$BIN/$name" 2>/dev/null || mv "$tmp"/* "$BIN/$name"
  stamp "$name" "$version"
  log "$name v$version: built in $((SECONDS - t0))s"
}

# helm, with the link-time variables its own Makefile sets: without them `helm version` has no patch
# level and offline `helm template`/`helm lint` assume Kubernetes v1.20, failing charts that declare
# a newer kubeVersion. The Kubernetes version is derived from helm's client-go, as its Makefile does.
HELM_BUILD_REV=2  # bump when the build flags change, to rebuild cached binaries
build_helm() {
  if up_to_date helm "$HELM_VERSION" && [[ "$(cat "$BIN/.helm.build-rev" 2>/dev/null)" == "$HELM_BUILD_REV" ]]; then
    log "helm v$HELM_VERSION: cached"; return
  fi
  log "helm v$HELM_VERSION: building"
  local t0=$SECONDS tmp="$WORK/gobin-helm" gomod client_go major minor
  mkdir -p "$tmp"
  gomod=$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  client_go=$(sed -n 's#^\s*k8s.io/client-go v\([0-9][0-9.]*\).*#\1#p' "$gomod" | head -n1)
  major=$(( ${client_go%%.*} + 1 )); minor=$(echo "$client_go" | cut -d. -f2)
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  GOBIN="$tmp" go install -p "$JOBS" -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  mv "$tmp/helm" "$BIN/helm"
  stamp helm "$HELM_VERSION"; echo "$HELM_BUILD_REV" > "$BIN/.helm.build-rev"
  log "helm v$HELM_VERSION: built in $((SECONDS - t0))s (default Kubernetes version v$major.$minor for offline rendering)"
}

# Prometheus (server and promtool) from its Go module, the way its own build does it but with two
# build tags changed: no `builtinassets` (the web UI's JavaScript is not in the module: the UI pages
# are missing, the HTTP API, /-/ready, /-/reload and /metrics are all there) and only the file, http
# and kubernetes service discoveries (`remove_all_sd,enable_kubernetes_sd`: the cloud SDs would
# double the build). The Debian package's Prometheus is built without kubernetes_sd_configs, so the
# scrape config docs/metrics.md documents could not be loaded by it.
build_prometheus() {
  if up_to_date prometheus "$PROMETHEUS_VERSION" && up_to_date promtool "$PROMETHEUS_VERSION"; then
    log "prometheus v$PROMETHEUS_VERSION: cached"; return
  fi
  local minor="${PROMETHEUS_VERSION#0.}"; minor="${minor%%.*}"
  local patch="${PROMETHEUS_VERSION##*.}" release
  release="3.$((10#${minor} - 300)).$patch"
  log "prometheus v$PROMETHEUS_VERSION (Prometheus $release): building prometheus and promtool"
  local t0=$SECONDS tmp="$WORK/gobin-prometheus" v=github.com/prometheus/common/version
  mkdir -p "$tmp"
  local ldflags="-s -w -X $v.Version=$release -X $v.Revision=v$PROMETHEUS_VERSION -X $v.Branch=module"
  ldflags+=" -X $v.BuildUser=tokenfactory -X $v.BuildDate=19700101-00:00:00"
  GOBIN="$tmp" go install -p "$JOBS" -trimpath -tags "remove_all_sd,enable_kubernetes_sd" -ldflags "$ldflags" \
    "github.com/prometheus/prometheus/cmd/prometheus@v$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_VERSION"
  mv "$tmp/prometheus" "$BIN/prometheus"; stamp prometheus "$PROMETHEUS_VERSION"
  mv "$tmp/promtool" "$BIN/promtool"; stamp promtool "$PROMETHEUS_VERSION"
  log "prometheus v$PROMETHEUS_VERSION: built in $((SECONDS - t0))s"
}

# CRDs from a module: NAME MODULE VERSION DIR GLOB. `go mod download` fetches the module's zip through the
# Go module proxy (checked against sum.golang.org); only the files of DIR matching GLOB that are
# CustomResourceDefinitions are kept, in $CACHE/crds/NAME, stamped with the version.
fetch_crds() {
  local name=$1 module=$2 version=$3 dir=$4 glob=$5 dest="$CACHE/crds/$1"
  if [[ -d "$dest" && "$(cat "$dest/.version" 2>/dev/null)" == "$version" ]]; then
    log "$name v$version CRDs: cached"; return
  fi
  log "$name v$version CRDs: downloading $module@v$version through the Go module proxy"
  local json src f n=0
  if ! json=$(go mod download -json "$module@v$version"); then
    log "$name v$version CRDs: go mod download failed: $json"; return 1
  fi
  src=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$json")
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  for f in "$src/$dir"/$glob; do
    if grep -q '^kind: CustomResourceDefinition' "$f"; then install -m 0644 "$f" "$dest.tmp/"; n=$((n + 1)); fi
  done
  [[ $n -gt 0 ]] || { log "$name v$version CRDs: no CustomResourceDefinition in $src/$dir/$glob"; return 1; }
  echo "$version" > "$dest.tmp/.version"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
  log "$name v$version CRDs: $n files in $dest"
}

build_crds() {
  fetch_crds gateway-api sigs.k8s.io/gateway-api "$GATEWAY_API_VERSION" config/crd/standard '*.yaml'
  # Only the stable InferencePool (inference.networking.k8s.io/v1); the x-k8s.io alpha kinds are not used.
  fetch_crds gateway-api-inference-extension sigs.k8s.io/gateway-api-inference-extension \
    "$INFERENCE_EXTENSION_VERSION" config/crd/bases 'inference.networking.k8s.io_*.yaml'
}

components=("$@")
[[ ${#components[@]} -eq 0 ]] && components=(etcd kwok kubernetes helm prometheus crds)
for c in "${components[@]}"; do
  case "$c" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ;;
    helm) build_helm ;;
    prometheus) build_prometheus ;;
    crds) build_crds ;;
    *) log "unknown component '$c' (allowed: kubernetes etcd kwok helm prometheus crds)"; exit 2 ;;
  esac
done
log "binaries ready in $BIN"
