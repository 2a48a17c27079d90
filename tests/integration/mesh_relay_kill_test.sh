#!/usr/bin/env bash
# The ring of mesh_ring_test.sh, but instead of a link being cut, the relay
# the program's pages cross dies in the middle of its reads: memfedd and
# babeld killed (SIGKILL), the node's namespace and links gone, as when a
# lamp post loses power. The route must move to the relay on the other side,
# and the unmodified program's every sha256sum must match the bytes written.
MESH_RING_BREAK=relay exec bash "$(dirname "$0")/mesh_ring_test.sh"
