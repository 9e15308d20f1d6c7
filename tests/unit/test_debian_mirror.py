"""The lab's image build finds the machine's Debian mirror whatever suite its apt sources name."""

from __future__ import annotations

from swarmctl_lab.images import find_debian_mirror

BOOKWORM_DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""

TRIXIE_DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main

Types: deb deb-src
URIs: http://mirror.example.net/debian/
Suites: trixie trixie-updates
Components: main contrib
"""


def test_bookworm_deb822() -> None:
    assert find_debian_mirror([BOOKWORM_DEB822]) == "http://deb.debian.org/debian"


def test_trixie_deb822_skips_the_security_mirror() -> None:
    assert find_debian_mirror([TRIXIE_DEB822]) == "http://mirror.example.net/debian"


def test_one_line_format_any_suite() -> None:
    text = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian trixie main\n"
    assert find_debian_mirror([text]) == "http://ftp.de.debian.org/debian"
    assert find_debian_mirror(["deb http://local.mirror/deb sid main\n"]) == "http://local.mirror/deb"


def test_security_only_source_sources_and_disabled_blocks_are_not_mirrors() -> None:
    texts = [
        "deb http://security.debian.org/debian-security bookworm-security main\n",
        "deb-src http://deb.debian.org/debian bookworm main\n",
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nEnabled: no\n",
    ]
    assert find_debian_mirror(texts) is None


def test_ubuntu_has_no_debian_mirror() -> None:
    ubuntu = (
        "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: noble noble-updates\nComponents: main\n\n"
        "deb http://archive.ubuntu.com/ubuntu jammy main\n"
    )
    assert find_debian_mirror([ubuntu]) is None


def test_first_file_wins() -> None:
    other = "deb http://second.example/debian bookworm main\n"
    assert find_debian_mirror([BOOKWORM_DEB822, other]) == "http://deb.debian.org/debian"
