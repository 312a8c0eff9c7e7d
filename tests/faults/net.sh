# Network namespaces for tests/faults/run.sh: the topology and the faults
# that are made in it. Sourced, not run.
#
# One namespace per piece (pg, s3 for Garage, lb for HAProxy, n1 n2 n3 for
# the Wharf nodes, cl for the test's own clients), each with one veth link
# `eth0` to a bridge `br0` that lives in a namespace of its own (sw, the
# switch). Addresses 10.77.0.0/24: pg .2, s3 .3, lb .4, nodes .11-.13,
# clients .100. Nothing is added to the machine's own namespace: each veth
# pair is created inside the switch's namespace with its other end moved
# straight into its piece's, so deleting the namespaces removes every link
# and the bridge with them.
#
# Faults are iptables rules in a chain FAULT that each piece's INPUT jumps
# to (this kernel has no netem): a link is cut by dropping, on each of its
# two ends, what arrives from the other one (so the sender sees packets
# vanish, as on a real network, not a local EPERM as an OUTPUT drop would
# give), and loss is `-m statistic --mode random` on the same place.
# Healing flushes FAULT. Latency is not made here: see linkproxy.py.
#
# Must never: touch a namespace, link or process that is not this run's
# (every name carries NET_RUN, the runner's pid), or leave one behind:
# net_down removes them all, and net_sweep_stale those of runs that died.
#
# Needs: NET_RUN (a number, unique among live runs), `ip` and `iptables`.

NET_PREFIX=wharf-faults
NET_ROLES="pg s3 lb n1 n2 n3 cl"

net_ip() {
  case $1 in
    pg) echo 10.77.0.2 ;; s3) echo 10.77.0.3 ;; lb) echo 10.77.0.4 ;;
    n1) echo 10.77.0.11 ;; n2) echo 10.77.0.12 ;; n3) echo 10.77.0.13 ;;
    cl) echo 10.77.0.100 ;;
    *) return 1 ;;
  esac
}

net_ns() { echo "$NET_PREFIX-$NET_RUN-$1"; }

# nx ROLE CMD...: CMD inside ROLE's namespace.
nx() {
  local role=$1
  shift
  ip netns exec "$(net_ns "$role")" "$@"
}

# net_up: the switch, every piece's namespace and link, the FAULT chains.
net_up() {
  local r sw
  sw=$(net_ns sw)
  ip netns add "$sw" || return 1
  ip -n "$sw" link set lo up &&
    ip -n "$sw" link add br0 type bridge &&
    ip -n "$sw" link set br0 up || return 1
  for r in $NET_ROLES; do
    ip netns add "$(net_ns "$r")" || return 1
    ip -n "$(net_ns "$r")" link set lo up || return 1
    ip -n "$sw" link add "p-$r" type veth peer name eth0 netns "$(net_ns "$r")" || return 1
    ip -n "$sw" link set "p-$r" master br0 || return 1
    ip -n "$sw" link set "p-$r" up || return 1
    ip -n "$(net_ns "$r")" addr add "$(net_ip "$r")/24" dev eth0 || return 1
    ip -n "$(net_ns "$r")" link set eth0 up || return 1
    nx "$r" iptables -N FAULT || return 1
    nx "$r" iptables -A INPUT -j FAULT || return 1
  done
}

# net_pids_in ROLE: the pids of every process in ROLE's namespace.
net_pids_in() { ip netns pids "$(net_ns "$1")" 2>/dev/null; }

# net_delete_run RUN: every process in that run's namespaces KILLed (a
# stopped one is continued first, or it would not die), then the
# namespaces deleted.
net_delete_run() {
  local run=$1 ns pid pids i
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NET_PREFIX-$run-[a-z0-9]+$"); do
    for i in 1 2 3; do
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [ -n "$pids" ] || break
      for pid in $pids; do
        kill -CONT "$pid" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
      done
      sleep 0.3
    done
    ip netns del "$ns" 2>/dev/null || echo "net.sh: could not delete namespace $ns" >&2
  done
}

net_down() { net_delete_run "$NET_RUN"; }

# net_sweep_stale: namespaces of earlier runs whose runner is gone.
net_sweep_stale() {
  local run
  for run in $(ip netns list 2>/dev/null | awk '{print $1}' |
    sed -nE "s/^$NET_PREFIX-([0-9]+)-[a-z0-9]+$/\1/p" | sort -u); do
    [ "$run" = "$NET_RUN" ] && continue
    if ! kill -0 "$run" 2>/dev/null || ! tr '\0' ' ' <"/proc/$run/cmdline" 2>/dev/null | grep -q 'faults/run.sh'; then
      echo "net.sh: removing the namespaces of an earlier run ($run) that is gone"
      net_delete_run "$run"
    fi
  done
}

# net_left: this run's namespaces still present (for the final check).
net_left() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NET_PREFIX-$NET_RUN-" ; }

# ---------------------------------------------------------------- faults

# cut_link A B: nothing from A reaches B and nothing from B reaches A.
cut_link() {
  nx "$1" iptables -A FAULT -s "$(net_ip "$2")" -j DROP &&
    nx "$2" iptables -A FAULT -s "$(net_ip "$1")" -j DROP
}

# lossy ROLE PERCENT: PERCENT of the packets into ROLE, and of those from
# ROLE into every other piece, are lost (each direction of its link).
lossy() {
  local role=$1 p r
  p=$(awk -v x="$2" 'BEGIN { printf "%.4f", x / 100 }')
  nx "$role" iptables -A FAULT -i eth0 -m statistic --mode random --probability "$p" -j DROP || return 1
  for r in $NET_ROLES; do
    [ "$r" = "$role" ] && continue
    nx "$r" iptables -A FAULT -s "$(net_ip "$role")" -m statistic --mode random --probability "$p" -j DROP ||
      return 1
  done
}

# heal_all: every FAULT chain emptied.
heal_all() {
  local r rc=0
  for r in $NET_ROLES; do
    nx "$r" iptables -F FAULT || rc=1
  done
  return $rc
}

# fault_rules: what the FAULT chains hold now (for logs).
fault_rules() {
  local r
  for r in $NET_ROLES; do
    nx "$r" iptables -S FAULT | sed "s/^/$r: /" | grep -v -- '-N FAULT'
  done
  return 0
}
