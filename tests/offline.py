"""Runs ``python -m MODULE ARGS`` as on a machine without network.

python tests/offline.py MODULE ARGS...

Every connection beyond loopback fails the way it does offline, whatever
network this machine has: a host name does not resolve (socket.gaierror,
as without DNS) and an address outside loopback is unreachable
(ENETUNREACH). Loopback works, so a job's tasks still reach each other.
Python's sockets only: what TensorFlow's C++ opens is not affected (the
trainers download nothing from C++).
"""

import errno
import ipaddress
import runpy
import socket
import sys

_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _address(host):
  """The IP address ``host`` is, or None for a name."""
  if isinstance(host, bytes):
    host = host.decode()
  try:
    return ipaddress.ip_address(host.split("%")[0])
  except ValueError:
    return None


def _getaddrinfo_offline(host, *args, **kwargs):
  # Names need DNS, addresses do not; localhost is in /etc/hosts.
  if host not in (None, "localhost") and _address(host) is None:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
  return _getaddrinfo(host, *args, **kwargs)


def _unreachable(sock, address) -> bool:
  if sock.family not in (socket.AF_INET, socket.AF_INET6):
    return False
  ip = _address(address[0])
  return ip is None or not ip.is_loopback


def _connect_offline(sock, address):
  if _unreachable(sock, address):
    raise OSError(errno.ENETUNREACH, "Network is unreachable")
  return _connect(sock, address)


def _connect_ex_offline(sock, address):
  if _unreachable(sock, address):
    return errno.ENETUNREACH
  return _connect_ex(sock, address)


def main() -> None:
  socket.getaddrinfo = _getaddrinfo_offline
  socket.socket.connect = _connect_offline
  socket.socket.connect_ex = _connect_ex_offline
  module = sys.argv[1]
  sys.argv = [module, *sys.argv[2:]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
