"""Image push wall time to 3 and 6 hosts: `swarmctl images push` vs `docker save | ssh docker load`
run host after host (what a script does without a registry).

The archive is the lab's image bundle (three images on one Debian base layer, ~470 MB): both
sides start from hosts that have none of its images. The baseline streams the same archive with
OpenSSH into `docker load` on each host in turn, with the same key and known_hosts.

Then the day-to-day case (issue 28): an image that adds one small layer (64 KB) on top of the
bundle's probe image, in an archive of its own that holds every layer, pushed to the same hosts
right after the bundle: swarmctl sends each host only what it lacks. Its time and the bytes each
host was sent are printed beside the full push's.

usage: python -m bench.images [--sizes 3 6] [--repeat 1] [--smoke]      (root; builds its own lab)
       --smoke: 3 hosts, once, with a tiny generated archive, to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
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


SMALL_LAYER = 64 * 1024


def derived_archive(source: Path, directory: Path, ref: str = "bench/derived:1") -> Path:
    """An archive of ``source``'s first image plus one small layer on top (a new file of
    SMALL_LAYER bytes), holding every layer, as `docker save` of such an image would."""
    with tarfile.open(source) as src:
        manifest = json.load(src.extractfile("manifest.json"))  # type: ignore[arg-type]
        entry = manifest[0]
        config = json.load(src.extractfile(entry["Config"]))  # type: ignore[arg-type]
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tar:
            info = tarfile.TarInfo("srv/derived.bin")
            info.size = SMALL_LAYER
            tar.addfile(info, io.BytesIO(hashlib.sha256(b"swarmctl").digest() * (SMALL_LAYER // 32)))
        data = layer.getvalue()
        diff = hashlib.sha256(data).hexdigest()
        config["rootfs"]["diff_ids"].append(f"sha256:{diff}")
        config.setdefault("history", []).append({"created_by": "bench.images: one small layer"})
        raw = json.dumps(config).encode()
        image_id = hashlib.sha256(raw).hexdigest()
        out = directory / "derived.tar"
        with tarfile.open(out, "w") as tar:
            for path in entry["Layers"]:
                member = src.getmember(path)
                blob = src.extractfile(member)  # a link is read through to its file
                info = tarfile.TarInfo(path)
                if member.issym() or member.islnk():
                    name = member.linkname
                    if member.issym():
                        name = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
                    info.size = src.getmember(name).size
                else:
                    info.size = member.size
                tar.addfile(info, blob)
            for name, payload in ((f"{diff}/layer.tar", data), (f"{image_id}.json", raw)):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            listing = [
                {"Config": f"{image_id}.json", "RepoTags": [ref], "Layers": [*entry["Layers"], f"{diff}/layer.tar"]}
            ]
            payload = json.dumps(listing).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out


def pushed(argv: list[str]) -> tuple[float, dict[str, int]]:
    """Seconds `images push --json` took, and the bytes each host was sent."""
    t0 = time.monotonic()
    proc = subprocess.run([*argv, "--json"], capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, {h: int(r["bytes"]) for h, r in json.loads(proc.stdout)["hosts"].items()}


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
    derived = derived_archive(archive, tmp)
    refs = [*info.refs, *read_archive(derived).refs]
    rows = []
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, 1)
            inventory = labhosts.bring_up(spec)
            cli = [sys.executable, "-m", "swarmctl", "images", "push", "-i", str(inventory)]
            ours, again, layer, layer_bytes, script = [], [], [], [], []
            for _ in range(args.repeat):
                remove_images(spec, refs)
                ours.append(timed([*cli, str(archive)]))
                again.append(timed([*cli, str(archive)]))
                seconds, sent = pushed([*cli, str(derived)])
                layer.append(seconds)
                layer_bytes.append(max(sent.values()))
                remove_images(spec, refs)
                script.append(sequential_ssh(spec, archive))
            remove_images(spec, refs)
            rows.append((n, statistics.median(ours), statistics.median(again), statistics.median(layer),
                         max(layer_bytes), statistics.median(script)))  # fmt: skip
    finally:
        labhosts.teardown(LAB_DIR)
    print(f"image push of {archive.name} ({info.size / 1e6:.0f} MB, {len(info.refs)} images), median of "
          f"{args.repeat} (s); then {derived.name} ({derived.stat().st_size / 1e6:.0f} MB: its first image "
          f"and one {SMALL_LAYER // 1024} KB layer more)")  # fmt: skip
    print(
        f"{'hosts':>5}  {'swarmctl':>9}  {'second push':>11}  {'one layer more':>14}  {'sent per host':>13}"
        f"  {'save | ssh load, host after host':>32}  {'speed-up':>8}"
    )
    for n, ours_s, again_s, layer_s, per_host, script_s in rows:
        print(f"{n:>5}  {ours_s:>9.2f}  {again_s:>11.2f}  {layer_s:>8.2f} ({layer_s / ours_s:.0%})  "
              f"{per_host / 1e6:>10.3f} MB  {script_s:>32.2f}  {script_s / ours_s:>7.2f}x")  # fmt: skip
    if len(rows) >= 2:
        print(f"growth {rows[0][0]} -> {rows[-1][0]} hosts: swarmctl {rows[-1][1] / rows[0][1]:.2f}x, "
              f"host after host {rows[-1][5] / rows[0][5]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
