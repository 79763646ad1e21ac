#!/usr/bin/env bash
# make demo: the classic Docker networking lab, end to end, with ournet.
# Custom subnet/ip-range/gateway network, a --net-alias target group answering in turn,
# brctl show, connect/disconnect, a published port read back from iptables and hit from the host.
# Every command it runs is one the README shows. It cleans up after itself, also on failure.
set -euo pipefail
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-ournet-test:latest}
if [[ ${DEMO_SKIP_SETUP:-0} != 1 ]]; then
	docker info >/dev/null 2>&1 || scripts/engine.sh start
	docker plugin inspect ournet/driver:latest >/dev/null 2>&1 || make -s install
	scripts/test-image.sh >/dev/null
fi

cleanup() {
	docker rm -f web1 web2 web3 client published >/dev/null 2>&1 || true
	docker network rm netlb backend >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }

echo "== 1. A network with your own subnet, range and gateway"
step docker network create -d ournet --ipam-driver ournet \
	--subnet 172.200.1.0/24 --ip-range 172.200.1.0/24 --gateway 172.200.1.1 netlb
step docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} gw {{.Gateway}}{{end}}' netlb

echo
echo "== 2. Three web servers in one target group (--net-alias tg-net): .2, .3, .4"
for name in web1 web2 web3; do
	step docker run -d --name "$name" --net netlb --net-alias tg-net "$IMAGE" probe http-serve :80 -text "$name"
done
for name in web1 web2 web3; do
	ip=$(docker inspect -f '{{.NetworkSettings.Networks.netlb.IPAddress}}' "$name")
	echo "$name -> $ip"
done
[[ $(docker inspect -f '{{.NetworkSettings.Networks.netlb.IPAddress}}' web3) == 172.200.1.4 ]] || fail "web3 did not get 172.200.1.4"

echo
echo "== 3. The embedded DNS knows every member of the group"
step docker run -d --name client --net netlb "$IMAGE" sleep 600
step docker exec client nslookup tg-net 127.0.0.11
echo
echo "   Repeated requests to tg-net: the DNS answer rotates, so members take turns"
declare -A answered
for i in $(seq 1 9); do
	who=$(docker exec client probe get http://tg-net/)
	answered[$who]=1
	echo "   request $i answered by $who"
done
echo "   ${#answered[@]} different members answered"
((${#answered[@]} >= 2)) || fail "only one member of tg-net answered 9 requests"

echo
echo "== 4. On the host: the bridge with one veth per container"
bridge=on-$(docker network inspect -f '{{.ID}}' netlb | cut -c1-12)
step brctl show "$bridge"

echo
echo "== 5. Connect and disconnect a second network (eth1 comes and goes)"
step docker network create -d ournet backend
step docker network connect backend client
step docker exec client ip -o -4 addr show
step docker network disconnect backend client
step docker exec client ip -o -4 addr show

echo
echo "== 6. Publish a port: in-kernel DNAT, no docker-proxy"
step docker run -d --name published --net netlb -p 8001:80 "$IMAGE" probe http-serve :80 -text published
ctr_chain=OURNET-DNAT-$(docker inspect -f '{{.NetworkSettings.Networks.netlb.EndpointID}}' published | cut -c1-12)
step iptables -t nat -L "$ctr_chain" -n
step curl -s --max-time 3 http://127.0.0.1:8001/
[[ $(curl -s --max-time 3 http://127.0.0.1:8001/) == published ]] || fail "published port 8001 did not answer"
step scripts/ports.sh

echo
echo "demo: done; cleaning up"
