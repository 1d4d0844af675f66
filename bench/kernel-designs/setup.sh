#!/bin/bash
# Creates the kx- namespaces of the kernel-design study.
# kx- namespaces: sender 10.211.1.2 -- 10.211.1.1 [relay, 10.211.0.1 on lo] 10.211.2.1 -- 10.211.2.2 receiver
set -e
for ns in kx-snd kx-rly kx-rcv; do ip netns add $ns; ip -n $ns link set lo up; done
ip link add name v-snd netns kx-snd type veth peer name v-s netns kx-rly
ip link add name v-rcv netns kx-rcv type veth peer name v-r netns kx-rly
ip -n kx-snd addr add 10.211.1.2/24 dev v-snd
ip -n kx-rly addr add 10.211.1.1/24 dev v-s
ip -n kx-rly addr add 10.211.2.1/24 dev v-r
ip -n kx-rly addr add 10.211.0.1/32 dev lo
ip -n kx-rcv addr add 10.211.2.2/24 dev v-rcv
for l in "kx-snd v-snd" "kx-rly v-s" "kx-rly v-r" "kx-rcv v-rcv"; do set -- $l; ip -n $1 link set $2 up; done
ip -n kx-snd route add default via 10.211.1.1
ip -n kx-rcv route add default via 10.211.2.1
ip netns exec kx-rly sysctl -qw net.ipv4.ip_forward=1
for ns in kx-snd kx-rly kx-rcv; do ip netns exec $ns sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0; done
