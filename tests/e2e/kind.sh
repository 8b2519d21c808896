#!/usr/bin/env bash
# End-to-end test of helm-guard on a throwaway kind cluster, replaying the seed story with real
# helm and kubectl. Needs: docker, kind, helm, kubectl, cargo (for `helm-guard certs`).
#
#   tests/e2e/kind.sh                 # from the repository root
#   KEEP_CLUSTER=1 tests/e2e/kind.sh  # leave the cluster running for inspection
#
# Environment: CLUSTER (default helm-guard-e2e), IMAGE (default helm-guard:e2e),
# NODE_IMAGE (kind node image, optional), KEEP_CLUSTER (1 = do not delete the cluster).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)

CLUSTER=${CLUSTER:-helm-guard-e2e}
IMAGE=${IMAGE:-helm-guard:e2e}
NODE_IMAGE=${NODE_IMAGE:-}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
NS=e2e-demo
RELEASE=web
CHART="$repo/tests/e2e/chart"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
pass() { printf 'PASS: %s\n' "$*"; }

for tool in docker kind helm kubectl cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

work=$(mktemp -d)
# The kustomization with the generated certificates lives under target/ (git-ignored) so that
# it can reach deploy/ by a fixed relative path.
certs="$repo/target/e2e/certs"
created=0
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && $created -eq 1 ]]; then
    echo "--- helm-guard logs (last 50 lines per pod) ---" >&2
    kubectl --context "kind-$CLUSTER" -n helm-guard logs -l app.kubernetes.io/name=helm-guard \
      --tail=50 --prefix >&2 || true
  fi
  if [[ $created -eq 1 && $KEEP_CLUSTER != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$work" "$certs"
  exit "$rc"
}
trap cleanup EXIT

k() { kubectl --context "kind-$CLUSTER" "$@"; }
h() { helm --kube-context "kind-$CLUSTER" "$@"; }
live_image() { k -n "$NS" get deploy "$RELEASE" -o jsonpath='{.spec.template.spec.containers[0].image}'; }
annotation() { # name with dots escaped for jsonpath, e.g. helm-guard\.io/drift
  k -n "$NS" get deploy "$RELEASE" -o jsonpath="{.metadata.annotations.$1}"
}
expect_image() { # image step
  local got
  got=$(live_image)
  [[ $got == "$1" ]] || die "$2: live image is $got, expected $1"
}

log "create kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  die "cluster $CLUSTER already exists; delete it or set CLUSTER=..."
fi
kind_args=(create cluster --name "$CLUSTER" --wait 120s)
[[ -n $NODE_IMAGE ]] && kind_args+=(--image "$NODE_IMAGE")
kind "${kind_args[@]}"
created=1

log "build and load image $IMAGE (not pushed anywhere)"
docker build -t "$IMAGE" "$repo"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "generate certificates with helm-guard certs"
rm -rf "$certs"
mkdir -p "$certs"
cargo run --quiet --release --bin helm-guard -- \
  certs --service helm-guard --namespace helm-guard --out-dir "$certs"
for f in ca.crt tls.crt tls.key; do
  [[ -s $certs/$f ]] || die "helm-guard certs did not write $f"
done

log "apply the opt-in overlay with the TLS Secret and caBundle"
sed 's|\.\./deploy/|../../../deploy/|' "$repo/deploy/self-signed/certs-kustomization.yaml" \
  > "$certs/kustomization.yaml"
cat >> "$certs/kustomization.yaml" <<YAML
images:
  - name: helm-guard
    newName: ${IMAGE%:*}
    newTag: ${IMAGE##*:}
YAML
k apply --server-side -k "$certs"
k -n helm-guard rollout status deploy/helm-guard --timeout=180s

log "namespace $NS in enforce mode; install and upgrade the chart"
k create namespace "$NS"
k label namespace "$NS" helm-guard.io/mode=enforce
h install "$RELEASE" "$CHART" -n "$NS" --set image.tag=1.26
expect_image nginx:1.26 "helm install"
h upgrade "$RELEASE" "$CHART" -n "$NS" --set image.tag=1.27
expect_image nginx:1.27 "helm upgrade to 1.27"

log "enforce: wait until the webhook answers (server-side dry run of a manual rollback)"
denied=0
for _ in $(seq 1 30); do
  if ! k -n "$NS" set image "deploy/$RELEASE" web=nginx:1.26 --dry-run=server >"$work/out" 2>&1; then
    denied=1
    break
  fi
  sleep 2
done
[[ $denied -eq 1 ]] || die "dry-run manual image change was never denied: $(cat "$work/out")"
pass "server-side dry run denied (no side effects)"

log "enforce: kubectl set image back to 1.26 is denied"
if k -n "$NS" set image "deploy/$RELEASE" web=nginx:1.26 >"$work/out" 2>&1; then
  die "kubectl set image was allowed in enforce mode: $(cat "$work/out")"
fi
grep -qi 'denied' "$work/out" || die "denial message not shown: $(cat "$work/out")"
cat "$work/out"
expect_image nginx:1.27 "after denied set image"
pass "manual image drift denied"

log "enforce: the same change with the break-glass annotation in the same edit is allowed"
k -n "$NS" patch deploy "$RELEASE" --type=strategic -p \
  '{"metadata":{"annotations":{"helm-guard.io/allow-drift":"e2e: hotfix rollback"}},"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.26"}]}}}}' \
  >"$work/out" 2>&1 || die "break-glass patch was denied: $(cat "$work/out")"
cat "$work/out"
expect_image nginx:1.26 "after break-glass patch"
echo "helm-guard.io/drift after break-glass: $(annotation 'helm-guard\.io/drift')"
pass "break-glass change allowed"
# An annotation-only edit changes no image: the API server does not even call the webhook.
k -n "$NS" annotate deploy "$RELEASE" helm-guard.io/allow-drift-

log "audit: a manual image change is allowed with a Warning and marked"
k label namespace "$NS" helm-guard.io/mode=audit --overwrite
# The API server sees the new label after a moment: wait until a dry run is allowed.
allowed=0
for _ in $(seq 1 30); do
  if k -n "$NS" set image "deploy/$RELEASE" web=nginx:1.25 --dry-run=server >"$work/out" 2>&1; then
    allowed=1
    break
  fi
  sleep 2
done
[[ $allowed -eq 1 ]] || die "audit mode never took effect: $(cat "$work/out")"
if ! k -n "$NS" set image "deploy/$RELEASE" web=nginx:1.25 >"$work/out" 2>&1; then
  die "kubectl set image was denied in audit mode: $(cat "$work/out")"
fi
cat "$work/out"
grep -q '^Warning:' "$work/out" || die "no Warning printed in audit mode"
expect_image nginx:1.25 "after audited set image"
drift=$(annotation 'helm-guard\.io/drift')
[[ -n $drift ]] || die "helm-guard.io/drift annotation missing"
echo "helm-guard.io/drift: $drift"
pass "audited drift allowed, warned and annotated"

log "helm upgrade over the drift is allowed"
h upgrade "$RELEASE" "$CHART" -n "$NS" --set image.tag=1.27 2>"$work/err" \
  || die "helm upgrade failed: $(cat "$work/err")"
cat "$work/err"
expect_image nginx:1.27 "after helm upgrade"
pass "helm upgrade allowed"

log "events recorded by helm-guard in $NS"
k -n "$NS" get events --field-selector "involvedObject.name=$RELEASE" || true

log "all e2e checks passed"
