"""Builds, on a local Docker engine, the images compose.yaml pins, from the same software.

    python scripts/stack_images.py            # DOCKER_HOST says which engine

No registry is reachable from our machines, so ``docker compose up`` could
never pull ``prom/prometheus:v3.7.3`` and the rest. Each upstream image is
remade here under its own tag: the binaries are the ones the tests already run
(built from the Go module proxy or by the Collector Builder at the versions
compose.yaml pins), laid out as the upstream image lays them out (binary path,
entrypoint and default command, config path, user, working directory,
volumes, and busybox where upstream's base has the shell and ``wget`` the
healthchecks call). ``debian:bookworm-slim``, the base of demo/Dockerfile, is
made by debootstrap from Debian's archive. compose.yaml then runs unchanged.

What this cannot remake is anything else upstream's images carry (their own
default config files, licences, timezone data): those are not part of what
compose.yaml uses. Grafana is AGPL and is not built at all.

Each image is imported from a tar stream (``docker import``) and marked with a
hash of its contents, so a second run with nothing changed builds nothing. A
tag the engine already has from a registry is left alone: the upstream image
is the better test. Images are only made on the engine scripts/docker-engine.sh
runs (its socket in the cache folder), never on a developer's own engine,
where a remade tag would stand in for the upstream image in every later
``docker compose up``: there compose pulls them, as for users. Set
``OFM_STACK_IMAGES_ANY_ENGINE=1`` to make them on another engine anyway.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack_processes import (
    COMPOSE,
    ROOT,
    MissingTool,
    _run_build,
    build_collector,
    build_jaeger,
    build_victorialogs,
    tool_cache,
)

NOBODY = 65534
DEMO_DOCKERFILE = ROOT / "demo" / "Dockerfile"
#: Where Debian keeps the Mozilla CA bundle's certificates, without the
#: machine's own additions (a TLS-inspecting proxy's CA stays out of images).
MOZILLA_CERTS = Path("/usr/share/ca-certificates/mozilla")
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
DOCKER_TIMEOUT = 600  # seconds, for one docker command
#: How images made here are marked (their Comment): an image under the same
#: tag without it was pulled from the registry, and is never replaced.
MARK = "otel-flask-metrics"


@dataclass(frozen=True)
class Entry:
    """One path in an image: a file (from ``source`` or ``data``), a directory or a symlink."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    link: str | None = None
    mode: int = 0o755
    uid: int = 0


@dataclass
class Image:
    tag: str
    entries: list[Entry] = field(default_factory=list)
    #: Dockerfile instructions docker import accepts (USER, ENTRYPOINT, CMD, ...).
    changes: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """A hash of everything that goes into the image, the files' contents included."""
        h = hashlib.sha256()
        h.update(json.dumps(self.changes).encode())
        for entry in self.entries:
            h.update(repr((entry.path, entry.link, entry.mode, entry.uid)).encode())
            if entry.data is not None:
                h.update(entry.data)
            if entry.source is not None:
                with entry.source.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()[:16]


# --- the upstream tags, as compose.yaml pins them -------------------------------


def pinned_tag(image: str) -> str:
    """The tag compose.yaml pins for ``image`` (without the leading v)."""
    match = re.search(rf"image: *{re.escape(image)}:v?([0-9][0-9.]*)", COMPOSE.read_text())
    if match is None:
        raise MissingTool(f"compose.yaml pins no tag for {image}")
    return match.group(1)


def demo_base() -> str:
    """The image demo/Dockerfile starts FROM, which this script makes with debootstrap."""
    match = re.search(r"^FROM +(\S+)", DEMO_DOCKERFILE.read_text(), re.MULTILINE)
    if match is None:
        raise MissingTool("demo/Dockerfile has no FROM line")
    return match.group(1)


# --- the binaries ---------------------------------------------------------------


def go_program(module: str, version: str, package: str, name: str, ldflags: str = "") -> Path:
    """A command of a Go module at an exact version, built (and cached) by build-go-module.sh."""
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build-go-module.sh"), module, version, package, name,
             ldflags],
            check=True, stdout=subprocess.PIPE, timeout=3600,
        )
    except subprocess.CalledProcessError:
        raise MissingTool(f"{name} {version} could not be built: see the message above") from None
    return Path(result.stdout.decode().strip().splitlines()[-1])


def prometheus_version_flag(version: str) -> str:
    return f"-X github.com/prometheus/common/version.Version={version}"


# --- image layouts --------------------------------------------------------------


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries a dynamically linked binary loads (none for a static one)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:  # "not a dynamic executable"
        return []
    libraries = re.findall(r"(?:=> )?(/\S+) \(0x", out.stdout)
    return [Path(p) for p in libraries]


def base_entries(*, busybox: bool) -> list[Entry]:
    """What upstream's bases give every image: users, /tmp, CA certificates, busybox's tools."""
    bundle = b"".join(p.read_bytes() for p in sorted(MOZILLA_CERTS.glob("*.crt")))
    entries = [
        Entry("etc", mode=0o755),
        Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"
              b"nobody:x:65534:65534:nobody:/home:/bin/false\n", mode=0o644),
        Entry("etc/group", data=b"root:x:0:\nnobody:x:65534:\n", mode=0o644),
        Entry("etc/ssl", mode=0o755),
        Entry("etc/ssl/certs", mode=0o755),
        Entry("etc/ssl/certs/ca-certificates.crt", data=bundle, mode=0o644),
        Entry("tmp", mode=0o1777),
    ]
    if busybox:
        entries += [Entry("bin", mode=0o755), Entry("bin/busybox", source=BUSYBOX)]
        listed = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                                check=True, timeout=30).stdout.split()
        directories = sorted({str(Path(p).parent) for p in listed} - {"bin", "."})
        entries += [Entry(d, mode=0o755) for d in directories]
        entries += [Entry(p, link="/bin/busybox") for p in listed if p != "bin/busybox"]
    return entries


def binary_entries(binary: Path, dest: str) -> list[Entry]:
    """The binary at ``dest``, and the libraries it loads at the paths it loads them from."""
    entries = [Entry(dest, source=binary, mode=0o755)]
    for library in shared_libraries(binary):
        entries.append(Entry(str(library).lstrip("/"), source=library.resolve(), mode=0o755))
    return entries


def with_parents(entries: list[Entry]) -> list[Entry]:
    """Every directory an entry lives in, listed before it (a tar needs no more, Docker does)."""
    seen = {e.path for e in entries}
    out: list[Entry] = []
    for entry in entries:
        parts = Path(entry.path).parts[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                out.append(Entry(parent, mode=0o755))
        out.append(entry)
    # Same paths listed twice (a library two binaries share) are kept once.
    unique: dict[str, Entry] = {}
    for entry in out:
        unique.setdefault(entry.path, entry)
    return list(unique.values())


def prometheus_image() -> Image:
    version = pinned_tag("prom/prometheus")
    bin_dir = Path(_run_build("build-prometheus.sh", "Prometheus", 3600))
    # As upstream's Dockerfile: busybox (glibc) base, /bin/prometheus, config
    # under /etc/prometheus, data in /prometheus owned by nobody.
    entries = base_entries(busybox=True)
    entries += binary_entries(bin_dir / "prometheus", "bin/prometheus")
    entries += binary_entries(bin_dir / "promtool", "bin/promtool")
    entries += [
        Entry("etc/prometheus", mode=0o755, uid=NOBODY),
        Entry("etc/prometheus/prometheus.yml", data=b"scrape_configs: []\n", mode=0o644,
              uid=NOBODY),
        Entry("prometheus", mode=0o775, uid=NOBODY),
    ]
    return Image(f"prom/prometheus:v{version}", with_parents(entries), [
        f"USER {NOBODY}", "WORKDIR /prometheus", 'VOLUME ["/prometheus"]', "EXPOSE 9090",
        'ENTRYPOINT ["/bin/prometheus"]',
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]',
    ])


def alertmanager_image() -> Image:
    version = pinned_tag("prom/alertmanager")
    module = "github.com/prometheus/alertmanager"
    flag = prometheus_version_flag(version)
    entries = base_entries(busybox=True)
    entries += binary_entries(
        go_program(module, f"v{version}", "./cmd/alertmanager", "alertmanager", flag),
        "bin/alertmanager")
    entries += binary_entries(
        go_program(module, f"v{version}", "./cmd/amtool", "amtool", flag), "bin/amtool")
    entries += [
        Entry("etc/alertmanager", mode=0o755),
        Entry("etc/alertmanager/alertmanager.yml",
              data=b"route:\n  receiver: none\nreceivers:\n  - name: none\n", mode=0o644),
        Entry("alertmanager", mode=0o755, uid=NOBODY),
    ]
    return Image(f"prom/alertmanager:v{version}", with_parents(entries), [
        f"USER {NOBODY}", "WORKDIR /alertmanager", 'VOLUME ["/alertmanager"]', "EXPOSE 9093",
        'ENTRYPOINT ["/bin/alertmanager"]',
        'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]',
    ])


def blackbox_image() -> Image:
    version = pinned_tag("prom/blackbox-exporter")
    binary = go_program("github.com/prometheus/blackbox_exporter", f"v{version}", ".",
                        "blackbox_exporter", prometheus_version_flag(version))
    entries = base_entries(busybox=True)
    entries += binary_entries(binary, "bin/blackbox_exporter")
    entries += [
        Entry("etc/blackbox_exporter", mode=0o755),
        Entry("etc/blackbox_exporter/config.yml",
              data=b"modules:\n  http_2xx:\n    prober: http\n", mode=0o644),
    ]
    # Upstream sets no USER (root); compose.yaml runs it as nobody.
    return Image(f"prom/blackbox-exporter:v{version}", with_parents(entries), [
        "EXPOSE 9115", 'ENTRYPOINT ["/bin/blackbox_exporter"]',
        'CMD ["--config.file=/etc/blackbox_exporter/config.yml"]',
    ])


def collector_image() -> Image:
    version = pinned_tag("otel/opentelemetry-collector-contrib")
    # Upstream's contrib image is FROM scratch: the binary, CA certificates and
    # uid 10001, nothing else (so no healthcheck can run inside it).
    entries = base_entries(busybox=False)
    entries += binary_entries(build_collector(), "otelcol-contrib")
    return Image(f"otel/opentelemetry-collector-contrib:{version}", with_parents(entries), [
        "USER 10001", "EXPOSE 4317 4318 55678 55679", 'ENTRYPOINT ["/otelcol-contrib"]',
        'CMD ["--config", "/etc/otelcol-contrib/config.yaml"]',
    ])


def jaeger_image() -> Image:
    version = pinned_tag("jaegertracing/jaeger")
    # Upstream: an alpine base (busybox's wget included), the binary at
    # /cmd/jaeger/jaeger-linux, /tmp as a volume, uid 10001.
    entries = base_entries(busybox=True)
    entries += binary_entries(build_jaeger(), "cmd/jaeger/jaeger-linux")
    return Image(f"jaegertracing/jaeger:{version}", with_parents(entries), [
        "USER 10001", 'VOLUME ["/tmp"]', "EXPOSE 4317 4318 5778 13133 16686",
        'ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]',
    ])


def victorialogs_image() -> Image:
    version = pinned_tag("victoriametrics/victoria-logs")
    # Upstream: an alpine base and the binary at /victoria-logs-prod, run as root.
    entries = base_entries(busybox=True)
    entries += binary_entries(build_victorialogs(), "victoria-logs-prod")
    return Image(f"victoriametrics/victoria-logs:v{version}", with_parents(entries), [
        "EXPOSE 9428", 'ENTRYPOINT ["/victoria-logs-prod"]',
    ])


UPSTREAM_IMAGES = (
    collector_image, prometheus_image, alertmanager_image, blackbox_image, jaeger_image,
    victorialogs_image,
)


# --- the engine -------------------------------------------------------------------


def docker(*args: str, stdin: io.BufferedReader | None = None) -> str:
    result = subprocess.run(["docker", *args], stdin=stdin, capture_output=True, text=True,
                            timeout=DOCKER_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def image_mark(tag: str) -> str | None:
    result = subprocess.run(["docker", "image", "inspect", "--format", "{{.Comment}}", tag],
                            capture_output=True, text=True, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def tar_entries(entries: Sequence[Entry], out: io.BufferedWriter) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.uid = info.gid = entry.uid
            info.mode = entry.mode
            info.mtime = 0
            if entry.link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            elif entry.source is not None:
                info.size = entry.source.stat().st_size
                with entry.source.open("rb") as f:
                    tar.addfile(info, f)
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)


def made_elsewhere(tag: str) -> bool:
    """The engine has ``tag`` from somewhere else (pulled from the registry): kept as it is."""
    mark = image_mark(tag)
    return mark is not None and not mark.startswith(MARK)


def import_image(image: Image) -> bool:
    """Imports ``image`` unless the engine already has it with the same contents."""
    mark = f"{MARK} {image.digest()}"
    if image_mark(image.tag) == mark or made_elsewhere(image.tag):
        return False
    with tempfile.TemporaryFile() as tar:
        tar_entries(image.entries, tar)  # type: ignore[arg-type]
        tar.seek(0)
        changes = [arg for change in image.changes for arg in ("--change", change)]
        docker("import", "--message", mark, *changes, "-", image.tag, stdin=tar)  # type: ignore[arg-type]
    return True


def debian_image(tag: str) -> bool:
    """The Debian release demo/Dockerfile names, made by debootstrap (minbase, slimmed)."""
    suite = tag.split(":", 1)[1].removesuffix("-slim")
    mark = f"{MARK} debootstrap {suite}"
    if image_mark(tag) == mark or made_elsewhere(tag):
        return False
    if os.geteuid() != 0:
        raise MissingTool(f"making {tag} with debootstrap needs root")
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", suite, str(root), "http://deb.debian.org/debian"],
            check=True, stdout=subprocess.DEVNULL, timeout=1200,
        )
        # As the official -slim images: no documentation, no package lists.
        for path in ("usr/share/doc", "usr/share/man", "usr/share/info", "var/lib/apt/lists",
                     "var/cache/apt"):
            subprocess.run(["find", str(root / path), "-mindepth", "1", "-delete"], check=False,
                           timeout=120)
        with tempfile.TemporaryFile() as tar:
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=tar,
                           check=True, timeout=600)
            tar.seek(0)
            docker("import", "--message", mark, "--change", 'CMD ["bash"]', "-", tag,
                   stdin=tar)  # type: ignore[arg-type]
    return True


def private_engine() -> bool:
    """DOCKER_HOST is the engine scripts/docker-engine.sh started, with its data in our cache."""
    ours = f"unix://{tool_cache() / 'docker' / 'docker.sock'}"
    return (
        os.environ.get("DOCKER_HOST") == ours
        or os.environ.get("OFM_STACK_IMAGES_ANY_ENGINE") == "1"
    )


def build_all() -> Iterator[tuple[str, bool]]:
    """(tag, built now) for each image compose.yaml needs that no registry gives us.

    Nothing on an engine that is not ours (see the module docstring).
    """
    if not private_engine():
        return
    base = demo_base()
    yield base, debian_image(base)
    for make in UPSTREAM_IMAGES:
        image = make()
        yield image.tag, import_image(image)


def main() -> int:
    if not private_engine():
        print("stack_images: DOCKER_HOST is not the engine scripts/docker-engine.sh runs; "
              "no image is made there (compose pulls them; OFM_STACK_IMAGES_ANY_ENGINE=1 "
              "makes them anyway)", flush=True)
        return 0
    try:
        for tag, built in build_all():
            state = "built" if built else "kept (pulled)" if made_elsewhere(tag) else "up to date"
            print(f"{tag}: {state}", flush=True)
    except (MissingTool, RuntimeError, subprocess.SubprocessError) as error:
        print(f"stack_images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
