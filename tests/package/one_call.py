"""One call through an installed mediaproxy, run inside the container's network.

  one_call.py setup SOCKET    INVITE + 200 OK over the module socket (as the
                              Kamailio module sends them), then RTP and RTCP
                              both ways through the relay; prints the dialog
                              as JSON. The call stays up when this exits.
  one_call.py remove SOCKET CALL_ID FROM_TAG TO_TAG
                              the module's remove; prints the reply.

test_package.py runs it with `nsenter --net` into the container, so the
phones (127.0.0.2, 127.0.0.3) and the relay (127.0.0.1) share its loopback
while SOCKET is reached through /proc/<pid>/root.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from mpclient import Dialog, MediaPort, ModuleClient, assert_media_flows  # noqa: E402


def setup(socket_path: str) -> None:
    with ModuleClient(socket_path, timeout=2.0) as client:
        caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
        dialog = Dialog(client)
        to_callee, to_caller = dialog.setup(caller, callee)
        assert_media_flows(caller, to_caller, callee, to_callee, n=50)
        print(json.dumps({"call_id": dialog.call_id, "from_tag": dialog.from_tag,
                          "to_tag": dialog.to_tag, "ports": [to_callee, to_caller]}))


def remove(socket_path: str, call_id: str, from_tag: str, to_tag: str) -> None:
    with ModuleClient(socket_path, timeout=2.0) as client:
        print(client.remove(call_id, from_tag, to_tag))


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2])
    else:
        remove(*sys.argv[2:6])
