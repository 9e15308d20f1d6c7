"""Image push wall time to 3 and 6 hosts: `swarmctl images push` vs `docker save | ssh docker load`
run host after host (what a script does without a registry).

The archive is the lab's image bundle (three images on one Debian base layer, ~470 MB): both
sides start from hosts that have none of its images. The baseline streams the same archive with
OpenSSH into `docker load` on each host in turn, with the same key and known_hosts.

usage: python -m bench.images [--sizes 3 6] [--repeat 1] [--smoke]      (root; builds its own lab)
       --smoke: 3 hosts, once, with a tiny generated archive, to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import docker

from swarmctl.facts.images import read_archive
from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images as labimages

LAB_DIR = Path(".swarmctl/bench-lab")


def tiny_archive(directory: Path) -> Path:
    """A valid `docker save` archive of one small image (one layer with a file), for smoke runs."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = b"swarmctl bench\n" * 1000
        info = tarfile.TarInfo("bench.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]}}).encode()  # fmt: skip
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{image_id}.json", "RepoTags": ["bench/tiny:1"], "Layers": [f"{diff}/layer.tar"]}]
    )
    out = directory / "tiny.tar"
    with tarfile.open(out, "w") as tar:
        for name, payload in ((f"{diff}/layer.tar", layer_bytes), (f"{image_id}.json", config),
                              ("manifest.json", manifest.encode())):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out


def remove_images(spec: labhosts.LabSpec, refs: list[str]) -> None:
    for h in spec.hosts:
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(h)}", version="1.41", timeout=300) as api:
            for ref in refs:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_image(ref, force=True)


def timed(argv: list[str], stdin_path: Path | None = None) -> float:
    t0 = time.monotonic()
    if stdin_path is not None:
        with open(stdin_path, "rb") as f:
            proc = subprocess.run(argv, stdin=f, capture_output=True, text=True)
    else:
        proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def sequential_ssh(spec: labhosts.LabSpec, archive: Path) -> float:
    ssh = ["ssh", "-q", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={spec.dir / 'known_hosts'}",
           "-o", "StrictHostKeyChecking=yes", "-i", str(spec.dir / "id_ed25519"), "-l", "root"]  # fmt: skip
    return sum(timed([*ssh, h.address, "docker", "load"], archive) for h in spec.hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="3 hosts, once, a tiny archive")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [3], 1
    tmp = Path(tempfile.mkdtemp(prefix="swarmctl-bench-images-"))
    archive = tiny_archive(tmp) if args.smoke else labimages.ensure_bundle()
    info = read_archive(archive)
    refs = list(info.refs)
    rows = []
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, 1)
            inventory = labhosts.bring_up(spec)
            cli = [sys.executable, "-m", "swarmctl", "images", "push", str(archive), "-i", str(inventory)]
            ours, again, script = [], [], []
            for _ in range(args.repeat):
                remove_images(spec, refs)
                ours.append(timed(cli))
                again.append(timed(cli))
                remove_images(spec, refs)
                script.append(sequential_ssh(spec, archive))
            remove_images(spec, refs)
            rows.append((n, statistics.median(ours), statistics.median(again), statistics.median(script)))
    finally:
        labhosts.teardown(LAB_DIR)
    print(f"image push of {archive.name} ({info.size / 1e6:.0f} MB, {len(refs)} images), median of {args.repeat} (s)")
    print(
        f"{'hosts':>5}  {'swarmctl':>9}  {'second push':>11}  {'save | ssh load, host after host':>32}  {'speed-up':>8}"
    )
    for n, ours_s, again_s, script_s in rows:
        print(f"{n:>5}  {ours_s:>9.2f}  {again_s:>11.2f}  {script_s:>32.2f}  {script_s / ours_s:>7.2f}x")
    if len(rows) >= 2:
        print(f"growth {rows[0][0]} -> {rows[-1][0]} hosts: swarmctl {rows[-1][1] / rows[0][1]:.2f}x, "
              f"host after host {rows[-1][3] / rows[0][3]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
