"""What the kernel holds for a socket: read by the protocols, and by a worker refusing a connection."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios


def unread_bytes(sock: socket.socket) -> int:
    """What the kernel has received for a socket and the collector not yet read (FIONREAD)."""
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile
        return 0
    count: int = struct.unpack("i", answer)[0]
    return count
