"""The Gramine stand-ins (tests/gramine_standin) against the documented behaviour they copy.

Each test names what Gramine's documentation says (manpages of gramine-sgx-sign,
gramine-sgx-sigstruct-view and gramine-sgx; the "Manifest syntax" and
"Attestation" pages; the SDM's SIGSTRUCT): the stand-ins are test tooling, but a
stand-in that drifted from Gramine would let the launch path pass where Gramine
would refuse it, so they are held to it here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from confide.attestation import Quote, SgxReportBody
from confide.gramine import simulated_mrenclave
from gramine_standin import StandinConfig, install, mount_namespace_support
from gramine_standin._manifest import STANDIN_LIBOS
from gramine_standin._sigstruct import SIZE, Sigstruct, SigstructError

_NO_NAMESPACE = mount_namespace_support()
needs_namespace = pytest.mark.skipif(_NO_NAMESPACE is not None, reason=str(_NO_NAMESPACE))

PYTHON = os.path.realpath(sys.executable)
#: Reads /dev/attestation as GramineTee does, prints what it got (stdlib already loaded).
PROBE = (
    "import os, sys\n"
    "t = open('/dev/attestation/attestation_type').read()\n"
    "open('/dev/attestation/user_report_data', 'wb').write(bytes(range(64)))\n"
    "q = open('/dev/attestation/quote', 'rb').read()\n"
    "k = open('/dev/attestation/keys/_sgx_mrenclave', 'rb').read()\n"
    "k2 = open('/dev/attestation/keys/_sgx_mrenclave', 'rb').read()\n"
    "open('/dev/shm/in-enclave', 'w').write('x')\n"
    "sys.stdout.write(t + ' ' + q.hex() + ' ' + k.hex() + ' ' + str(k == k2) + '\\n')\n"
    "for path in sys.argv[1:]:\n"
    "    try:\n"
    "        open(path, 'rb').close(); print('opened', path)\n"
    "    except PermissionError as exc:\n"
    "        print('refused', path, exc.errno)\n"
)


@dataclass
class Enclave:
    folder: Path
    standins: StandinConfig
    key: Path

    def tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.standins.bin_dir / name), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def manifest(self, **changes: str) -> Path:
        """A small valid manifest; ``changes`` replace or add top-level lines by key."""
        lines = {
            "libos.entrypoint": json.dumps(PYTHON),
            "loader.argv": json.dumps(
                [PYTHON, "-S", "-c", PROBE, "/etc/hostname", str(self.folder / "trusted.txt")]
            ),
            "loader.env.LANG": '"C.UTF-8"',
            "fs.mounts": '[{ type = "tmpfs", path = "/dev/shm" }]',
            "sgx.enclave_size": '"1G"',
            "sgx.max_threads": "8",
            "sgx.debug": "false",
            "sgx.remote_attestation": '"dcap"',
            "sgx.trusted_files": json.dumps(
                [f"file:{PYTHON}", f"file:{self.folder / 'trusted.txt'}", f"file:{self.lib}/"]
            ),
        }
        lines.update(changes)
        path = self.folder / "app.manifest"
        path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items() if v))
        return path

    @property
    def lib(self) -> Path:
        return self.folder / "lib"

    def sign(self) -> subprocess.CompletedProcess[str]:
        return self.tool(
            "gramine-sgx-sign", "--manifest", "app.manifest", "--output", "app.manifest.sgx",
            "--key", str(self.key),
        )  # fmt: skip


@pytest.fixture(scope="module")
def sgx_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = tmp_path_factory.mktemp("key") / "enclave-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(name="enclave")
def enclave_fixture(tmp_path: Path, sgx_key: Path) -> Enclave:
    folder = tmp_path / "app"
    (folder / "lib" / "sub").mkdir(parents=True)
    (folder / "lib" / "a.py").write_text("a = 1\n")
    (folder / "lib" / "sub" / "b.py").write_text("b = 2\n")
    (folder / "trusted.txt").write_text("trusted\n")
    standins = install(tmp_path / "bin", tmp_path / "platform")
    return Enclave(folder, standins, sgx_key)


# -- gramine-sgx-sign -------------------------------------------------------------------------


def test_sign_expands_trusted_files_and_writes_the_sigstruct_beside_the_manifest(
    enclave: Enclave,
) -> None:
    """Manpage: --output is the manifest with trusted files expanded; --sigfile defaults to
    the manifest's name without .manifest, plus .sig. Manifest syntax: a directory URI
    ends with '/' and is expanded; each entry becomes {uri, sha256}."""
    enclave.manifest()
    done = enclave.sign()
    assert done.returncode == 0, done.stderr
    expanded = tomllib.loads((enclave.folder / "app.manifest.sgx").read_text())
    entries = {e["uri"]: e["sha256"] for e in expanded["sgx"]["trusted_files"]}
    for path in (enclave.lib / "a.py", enclave.lib / "sub" / "b.py", Path(PYTHON)):
        assert entries[f"file:{path}"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"file:{enclave.lib}/" not in entries
    sig = Sigstruct.from_bytes((enclave.folder / "app.sig").read_bytes())
    assert sig.enclave_hash == simulated_mrenclave(
        (enclave.folder / "app.manifest.sgx").read_text()
    )


def test_sign_takes_a_given_sha256_as_it_is(enclave: Enclave) -> None:
    """Manifest syntax: with sha256 given, hashing of the file is skipped (so a wrong hash
    is signed, and gramine-sgx then refuses to run the file)."""
    wrong = "ab" * 32
    trusted = [{"uri": f"file:{enclave.folder / 'trusted.txt'}", "sha256": wrong}]
    enclave.manifest(**{"sgx.trusted_files": _inline(trusted)})
    assert enclave.sign().returncode == 0
    expanded = tomllib.loads((enclave.folder / "app.manifest.sgx").read_text())
    assert expanded["sgx"]["trusted_files"] == trusted


@pytest.mark.parametrize(
    ("trusted", "error"),
    [
        (["file:missing.txt"], "cannot hash trusted file"),
        (["lib/a.py"], "Unsupported URI type"),
        (["file:{lib}"], "does not end with '/'"),
        (["file:{folder}/trusted.txt/"], "ends with '/' but is not a directory"),
        ([{"uri": "file:{lib}/", "sha256": "00" * 32}], "has sha256 specified"),
        ([{"path": "file:x"}], "Unknown trusted file format"),
    ],
)
def test_sign_refuses_what_gramine_refuses(
    enclave: Enclave, trusted: list[object], error: str
) -> None:
    text = json.dumps(trusted).replace("{lib}", str(enclave.lib))
    text = text.replace("{folder}", str(enclave.folder))
    enclave.manifest(**{"sgx.trusted_files": _inline(json.loads(text))})
    done = enclave.sign()
    assert done.returncode == 1 and error in done.stderr, done.stderr
    assert not (enclave.folder / "app.sig").exists()


@pytest.mark.parametrize(("exponent", "size"), [(65537, 3072), (3, 2048)])
def test_sign_refuses_a_key_sgx_cannot_use(
    enclave: Enclave, tmp_path: Path, exponent: int, size: int
) -> None:
    """SDM: SIGSTRUCT's MODULUS is 3072 bits and its EXPONENT is 3."""
    key = rsa.generate_private_key(public_exponent=exponent, key_size=size)
    path = tmp_path / "other.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    enclave.key = path
    enclave.manifest()
    done = enclave.sign()
    assert done.returncode == 1 and "Invalid RSA key" in done.stderr


# -- SIGSTRUCT and gramine-sgx-sigstruct-view -------------------------------------------------


def test_the_sigstruct_is_the_sdm_layout_and_its_signature_holds(enclave: Enclave) -> None:
    enclave.manifest()
    assert enclave.sign().returncode == 0
    raw = (enclave.folder / "app.sig").read_bytes()
    assert len(raw) == SIZE == 1808
    sig = Sigstruct.from_bytes(raw)
    sig.check_signature()
    s, m = sig.signature, sig.modulus
    q1 = int.from_bytes(raw[1040:1424], "little")
    q2 = int.from_bytes(raw[1424:1808], "little")
    assert q1 == s * s // m and q2 == (s * s * s - q1 * s * m) // m
    tampered = bytearray(raw)
    tampered[976] ^= 1  # ENCLAVEHASH is among the signed bytes
    with pytest.raises(SigstructError, match="does not verify"):
        Sigstruct.from_bytes(bytes(tampered)).check_signature()


def test_sigstruct_view_prints_gramine_fields(enclave: Enclave, sgx_key: Path) -> None:
    """Manpage: mr_signer, mr_enclave, isv_prod_id, isv_svn, debug_enclave; --verbose adds
    the attribute fields and the date; --output-format toml|json is for parsing."""
    enclave.manifest()
    assert enclave.sign().returncode == 0
    sig = Sigstruct.from_bytes((enclave.folder / "app.sig").read_bytes())
    quiet = json.loads(enclave.tool("gramine-sgx-sigstruct-view", "--output-format=json",
                                    "app.sig").stdout)  # fmt: skip
    key = serialization.load_pem_private_key(sgx_key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    modulus = key.public_key().public_numbers().n.to_bytes(384, "little")
    assert quiet == {
        "mr_signer": hashlib.sha256(modulus).hexdigest(),
        "mr_enclave": sig.enclave_hash.hex(),
        "isv_prod_id": 0,
        "isv_svn": 0,
        "debug_enclave": False,
    }
    verbose = tomllib.loads(
        enclave.tool(
            "gramine-sgx-sigstruct-view", "-v", "--output-format", "toml", "app.sig"
        ).stdout
    )
    assert verbose["attribute_flags"] == "0x4" and verbose["attribute_xfrms"] == "0x3"
    assert verbose["attribute_xfrm_mask"] == "0xfffffffffff9ff1b"
    assert set(quiet) < set(verbose) and "date" in verbose
    text = enclave.tool("gramine-sgx-sigstruct-view", "app.sig").stdout
    assert text.startswith("Attributes:\n") and f"mr_enclave: {sig.enclave_hash.hex()}" in text


# -- gramine-sgx ---------------------------------------------------------------------------------


@needs_namespace
def test_gramine_sgx_gives_the_enclave_dev_attestation_of_its_measurement(
    enclave: Enclave,
) -> None:
    """Attestation page: attestation_type is dcap; write 64 bytes to user_report_data, then
    read quote: a DCAP quote embedding them; keys/_sgx_mrenclave is a 16-byte key bound to
    MRENCLAVE. Manifest syntax: strict file checks; a tmpfs mount is in-enclave memory."""
    enclave.manifest()
    assert enclave.sign().returncode == 0
    sig = Sigstruct.from_bytes((enclave.folder / "app.sig").read_bytes())
    done = enclave.tool("gramine-sgx", str(enclave.folder / "app"))
    assert done.returncode == 0, done.stderr
    first, *opened = done.stdout.splitlines()
    kind, quote_hex, key_hex, stable = first.split(" ")
    assert (kind, len(bytes.fromhex(key_hex)), stable) == ("dcap", 16, "True")
    quote = Quote.from_bytes(bytes.fromhex(quote_hex))
    assert isinstance(quote.body, SgxReportBody)
    assert quote.report_data == bytes(range(64))
    assert quote.body.mr_enclave == sig.enclave_hash
    assert quote.body.mr_signer == sig.mr_signer
    assert opened == ["refused /etc/hostname 13", f"opened {enclave.folder / 'trusted.txt'}"]
    assert not Path("/dev/attestation").exists()  # only in the enclave's namespace
    assert not Path("/dev/shm/in-enclave").exists()


@needs_namespace
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"loader.insecure__use_cmdline_argv": "true"}, "loader.insecure__use_cmdline_argv"),
        ({"fs.insecure__keys.default": '"00112233445566778899aabbccddeeff"'}, "insecure__keys"),
        ({"sgx.debug": "true"}, "sgx.debug"),
        ({"sgx.remote_attestation": '"none"'}, "remote_attestation"),
        ({"loader.argv": ""}, "loader.argv"),
        ({"sgx.file_check_policy": '"allow_all_but_log"'}, "file_check_policy"),
    ],
)
def test_gramine_sgx_refuses_an_insecure_manifest(
    enclave: Enclave, change: dict[str, str], error: str
) -> None:
    enclave.manifest(**change)
    assert enclave.sign().returncode == 0
    done = enclave.tool("gramine-sgx", str(enclave.folder / "app"))
    assert done.returncode == 1 and error in done.stderr, done.stderr
    assert "dcap" not in done.stdout  # nothing ran


@needs_namespace
def test_gramine_sgx_refuses_what_einit_or_the_loader_would(enclave: Enclave) -> None:
    """Manpage: APP.manifest.sgx must exist (exit 2). EINIT: the SIGSTRUCT must be for this
    manifest. Trusted files: hashes must match what the manifest holds."""
    base = str(enclave.folder / "app")
    missing = enclave.tool("gramine-sgx", base)
    assert missing.returncode == 2 and "app.manifest.sgx does not exist" in missing.stderr
    enclave.manifest()
    assert enclave.sign().returncode == 0
    sgx = enclave.folder / "app.manifest.sgx"
    original = sgx.read_text()
    sgx.write_text(original.replace('"1G"', '"2G"'))
    einit = enclave.tool("gramine-sgx", base)
    assert einit.returncode == 1 and "EINIT failed" in einit.stderr
    sgx.write_text(original)
    args = enclave.tool("gramine-sgx", base, "--extra")
    assert args.returncode == 1 and "command-line arguments" in args.stderr
    (enclave.folder / "trusted.txt").write_text("changed\n")
    changed = enclave.tool("gramine-sgx", base)
    assert changed.returncode == 1 and "trusted.txt changed" in changed.stderr


def _inline(entries: Sequence[object]) -> str:
    """A TOML array of strings or inline tables."""
    parts = []
    for entry in entries:
        if isinstance(entry, dict):
            parts.append(
                "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items()) + " }"
            )
        else:
            parts.append(json.dumps(entry))
    return "[" + ", ".join(parts) + "]"


@needs_namespace
def test_gramine_sgx_checks_a_trusted_file_again_when_it_is_opened(enclave: Enclave) -> None:
    """Trusted files: "at runtime, these files may only be accessed by the app if the files'
    hashes match": a file changed after the enclave started is refused when opened."""
    trusted = enclave.folder / "trusted.txt"
    program = (
        "import sys\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "try:\n"
        f"    open({str(trusted)!r}, 'rb').read(); print('opened')\n"
        "except PermissionError as exc:\n"
        "    print('refused', exc.errno, exc.strerror)\n"
    )
    enclave.manifest(**{"loader.argv": json.dumps([PYTHON, "-S", "-c", program])})
    assert enclave.sign().returncode == 0
    with subprocess.Popen(
        [str(enclave.standins.bin_dir / "gramine-sgx"), str(enclave.folder / "app")],
        cwd=enclave.folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as running:
        assert running.stdin is not None and running.stdout is not None
        assert running.stdout.readline() == "ready\n"
        trusted.write_text("changed after the start\n")
        running.stdin.write("go\n")
        running.stdin.flush()
        said = running.stdout.readline()
        assert running.wait(timeout=60) == 0
    assert said.startswith("refused 13 trusted file hash mismatch"), said


def test_where_gramine_is_not_installed_the_stand_in_plays_its_installation(
    enclave: Enclave,
) -> None:
    """The signer hashes the LibOS into loader.entrypoint.sha256 (manifest syntax); with no
    Gramine folder on this machine, the stand-in's LibOS is hashed and Gramine's own glibc
    folder has nothing to trust, so the operator writes Gramine's default paths."""
    missing = enclave.folder / "no-gramine"
    trusted = [f"file:{PYTHON}", f"file:{missing}/runtime/glibc/"]
    enclave.manifest(
        **{
            "loader.entrypoint.uri": json.dumps(f"file:{missing}/libsysdb.so"),
            "sgx.trusted_files": json.dumps(trusted),
        }
    )
    assert enclave.sign().returncode == 0, enclave.sign().stderr
    expanded = tomllib.loads((enclave.folder / "app.manifest.sgx").read_text())
    assert expanded["loader"]["entrypoint"]["sha256"] == hashlib.sha256(STANDIN_LIBOS).hexdigest()
    assert [e["uri"] for e in expanded["sgx"]["trusted_files"]] == [f"file:{PYTHON}"]
    # Installed: the real files are hashed, and a missing one is refused.
    (missing / "runtime" / "glibc").mkdir(parents=True)
    (missing / "libsysdb.so").write_bytes(b"a LibOS")
    (missing / "runtime" / "glibc" / "libc.so.6").write_bytes(b"a glibc")
    assert enclave.sign().returncode == 0
    expanded = tomllib.loads((enclave.folder / "app.manifest.sgx").read_text())
    assert expanded["loader"]["entrypoint"]["sha256"] == hashlib.sha256(b"a LibOS").hexdigest()
    assert f"file:{missing}/runtime/glibc/libc.so.6" in [
        e["uri"] for e in expanded["sgx"]["trusted_files"]
    ]
    (missing / "libsysdb.so").unlink()
    done = enclave.sign()
    assert done.returncode == 1 and "cannot hash loader.entrypoint" in done.stderr


def test_the_loader_passes_through_exactly_the_declared_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As Gramine does: a fixed value is the manifest's, a ``passthrough`` variable is the
    host's (only when set there), and nothing else of the host's environment gets in."""
    from gramine_standin.sgx import _environment

    monkeypatch.setenv("CONFIDE_LISTEN_PORT", "4711")
    monkeypatch.setenv("PYTHONPATH", "/host/evil")
    monkeypatch.setenv("LD_PRELOAD", "/host/evil.so")
    monkeypatch.delenv("CONFIDE_LISTEN_HOST", raising=False)
    manifest = tomllib.loads(
        'loader.env.PYTHONPATH = "/fixed"\n'
        "loader.env.CONFIDE_LISTEN_HOST = { passthrough = true }\n"
        "loader.env.CONFIDE_LISTEN_PORT = { passthrough = true }\n"
    )
    assert _environment(manifest) == {"PYTHONPATH": "/fixed", "CONFIDE_LISTEN_PORT": "4711"}
