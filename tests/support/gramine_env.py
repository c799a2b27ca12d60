"""A fake runtime environment in a temporary folder, built from copies of real files.

The acceptance tests change bytes of these copies, never of the real environment.
"""

from __future__ import annotations

import shutil
import site
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confide.gramine import EnvironmentRoots, RuntimeEnvironment
from confide.gramine._environment import scan_environment
from confide.gramine._hashcache import HashCache
from confide.wire import LaunchManifest, TlsMode

#: Distributions copied into the fake site folder: uvicorn needs h11 and click; flask is
#: installed but not required, so it must stay out of the measurement.
COPIED = ("uvicorn", "h11", "click", "flask")
#: A standard-library package and module copied into the fake standard library.
STDLIB = ("json", "os.py")
#: Far enough ahead that files written by a test are not "racily clean".
LATER_NS = 10 * 1_000_000_000

LAUNCH = LaunchManifest(
    runtime_sha256=bytes(32),
    package_sha256=bytes(range(32)),
    app_id=uuid.UUID(int=5),
    application="app:app",
    tls=TlsMode.RATLS,
    ratls_expiry=1_900_000_000,
    certificate_sha256=None,
    san=("app.example",),
    subject=None,
)


def _real_site() -> Path:
    return Path(site.getsitepackages()[0])


def _copy_distribution(name: str, site_dir: Path) -> None:
    real = _real_site()
    infos = [p for p in real.glob("*.dist-info") if p.name.split("-")[0].lower() == name]
    assert len(infos) == 1, (name, infos)
    shutil.copytree(infos[0], site_dir / infos[0].name)
    shutil.copytree(real / name, site_dir / name, ignore=shutil.ignore_patterns("__pycache__"))


@dataclass(frozen=True)
class FakeEnvironment:
    root: Path

    @property
    def roots(self) -> EnvironmentRoots:
        return EnvironmentRoots(
            interpreter=self.root / "bin" / "python3",
            libraries=(self.root / "lib" / "libpython3.so.1.0",),
            stdlib=(self.root / "lib" / "python3",),
            site=(self.root / "site",),
            confide_package=None,
        )

    def scan(self, cache: HashCache | None = None) -> RuntimeEnvironment:
        cache = cache or HashCache(None, now_ns=time.time_ns())
        return scan_environment(self.roots, ["uvicorn"], cache)

    def fingerprint(self) -> bytes:
        """The simulated fingerprint of LAUNCH run in this environment."""
        env = self.scan()
        return LaunchManifest.from_dict(
            {**LAUNCH.to_dict(), "runtime_sha256": env.digest.hex()}
        ).measurement()


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def make_fake_environment(root: Path) -> FakeEnvironment:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python3").write_bytes(b"\x7fELF fake interpreter\n")
    (root / "lib").mkdir()
    (root / "lib" / "libpython3.so.1.0").write_bytes(b"\x7fELF fake libpython\n")
    stdlib = root / "lib" / "python3"
    stdlib.mkdir()
    real_stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB:
        source = real_stdlib / name
        if source.is_dir():
            shutil.copytree(source, stdlib / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, stdlib / name)
    # Left out: test folders, byte code, the interpreter's own site-packages.
    for left_out in ("test", "json/tests", "__pycache__", "site-packages"):
        (stdlib / left_out).mkdir(parents=True, exist_ok=True)
        (stdlib / left_out / "left_out.py").write_text("x = 1\n")
    (root / "site").mkdir()
    for name in COPIED:
        _copy_distribution(name, root / "site")
    return FakeEnvironment(root)
