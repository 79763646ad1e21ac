#!/usr/bin/env bash
# Lists the ports ournet publishes (`docker port` cannot show a remote
# driver's ports): CONTAINER PROTO HOST_IP HOST_PORT CONTAINER_IP CONTAINER_PORT
#
#   scripts/ports.sh            (or: make ports)
set -euo pipefail

plugin=${OURNET_PLUGIN:-ournet/driver:latest}
id=$(docker plugin inspect -f '{{.Id}}' "$plugin")
socket=/run/docker/plugins/$id/ournet.sock
[[ -S $socket ]] || { echo "ports.sh: plugin socket $socket not found; is $plugin enabled?" >&2; exit 1; }

# endpoint ID -> container name, from every network's inspect output.
declare -A names
while read -r endpoint name; do
	[[ -n $endpoint ]] && names[$endpoint]=$name
done < <(docker network inspect -f '{{range $id, $c := .Containers}}{{$c.EndpointID}} {{$c.Name}}{{"\n"}}{{end}}' $(docker network ls -q))

printf '%-24s %-5s %-15s %-9s %-15s %s\n' CONTAINER PROTO HOST_IP HOST_PORT CONTAINER_IP CONTAINER_PORT
curl -sf --unix-socket "$socket" http://ournet/ournet.PublishedPorts |
	tr -d '[]' | sed 's/},{/}\n{/g' | sed -n 's/.*"endpoint_id":"\([^"]*\)","proto":"\([^"]*\)","host_ip":"\([^"]*\)","host_port":\([0-9]*\),"container_ip":"\([^"]*\)","container_port":\([0-9]*\).*/\1 \2 \3 \4 \5 \6/p' |
	while read -r endpoint proto host_ip host_port container_ip container_port; do
		printf '%-24s %-5s %-15s %-9s %-15s %s\n' "${names[$endpoint]:-${endpoint:0:12}}" "$proto" "$host_ip" "$host_port" "$container_ip" "$container_port"
	done
