#!/bin/bash
# Removes the kx- namespaces of the kernel-design study (killing what runs in them).
for ns in kx-snd kx-rly kx-rcv; do
  if ip netns list | grep -qw "^$ns"; then for p in $(ip netns pids $ns); do kill -9 $p 2>/dev/null; done; fi
done
sleep 0.2
for ns in kx-snd kx-rly kx-rcv; do ip netns delete $ns 2>/dev/null; done
true
