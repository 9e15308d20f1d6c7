"""Give a lab host a root that is a mount point when the lab runs inside a plain chroot.

``python -m swarmctl_lab.rootmount CMD ...`` runs in the lab host's own mount namespace. Inside a
chroot "/" is a directory of the machine's root filesystem, not a mount: dockerd cannot make it
rslave before unpacking an image layer, runc cannot pivot_root, and ``docker exec`` (setns into a
container's mount namespace) lands on the machine's real root instead of the container's. So the
chroot's tree is bound on top of the namespace's real "/" and the process re-enters its namespace,
which puts it on that mount; then CMD runs. This namespace alone sees the mount.

The work is done from this one process, with ctypes: after the first setns the chroot's binaries
and libraries are no longer reachable by path.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m swarmctl_lab.rootmount CMD [ARG ...]")
    libc = ctypes.CDLL(None, use_errno=True)
    ns = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    tree = os.open("/", os.O_PATH | os.O_DIRECTORY)  # the chroot's root, before leaving it
    _check(libc.setns(ns, CLONE_NEWNS), "setns")  # now at the namespace's real "/"
    _check(libc.mount(f"/proc/self/fd/{tree}".encode(), b"/", None, MS_BIND | MS_REC, None), "bind the tree on /")
    _check(libc.setns(ns, CLONE_NEWNS), "setns")  # re-entering goes down to the top mount on "/"
    os.chdir("/")
    os.close(ns)
    os.close(tree)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
