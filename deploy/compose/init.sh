#!/bin/sh
# One-off set-up of the local consortium (deploy/compose.yaml, service `init`, profile
# "init"): the consortium's CA and one certificate per participant, and a synthetic
# dataset in each node's data volume. Safe to run again: it keeps what exists.
#
# It runs as root only because Docker creates the node data volumes, mounted side by side
# here, owned by root; everything it writes is handed to the image's user (10001) at the
# end. The CA's folder, with ca.key, stays in the `ca` volume, which only this service
# mounts; the other services get ca.pem, NAME.pem and NAME.key through the `pki` volume.
set -eu
umask 077

CA=/srv/primia/state/ca
PKI=/srv/primia/pki
DATA=/srv/primia/data
NODES="hospital-a hospital-b hospital-c"
OWNER=10001:10001

if [ ! -f "$CA/ca.pem" ]; then
    primia certs init --dir "$CA" --consortium "${CONSORTIUM:-primia compose}"
fi

issue() {  # NAME ROLE: the certificate and key of NAME, unless it has them already
    if [ ! -f "$CA/$1.pem" ]; then
        primia certs issue --dir "$CA" --name "$1" --role "$2"
    fi
}
issue coordinator coordinator
for node in $NODES; do
    issue "$node" node
done
issue crypto-provider inference
issue model-owner inference

# Everything but the CA's private key goes to the services' read-only pki volume.
for file in "$CA"/*.pem "$CA"/*.key; do
    case "$file" in
        */ca.key) ;;
        *) cp "$file" "$PKI/" ;;
    esac
done

# Each hospital its own synthetic radiographs: one site each, a different seed each, so
# the sites differ (scanner look, burned-in marker) as real hospitals do.
seed=1
for node in $NODES; do
    if [ ! -f "$DATA/$node/manifest.csv" ]; then
        primia data synth --out "$DATA/$node" --sites 1 --patients-per-site 300 \
            --images-per-patient 4 --size 64 --seed "$seed" --no-progress
    fi
    seed=$((seed + 1))
done

chown -R "$OWNER" "$CA" "$PKI"
for node in $NODES; do
    chown -R "$OWNER" "$DATA/$node"
done
primia certs list --dir "$PKI"
